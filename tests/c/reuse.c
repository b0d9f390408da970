/* SPDX-License-Identifier: MIT */
/*
 * reuse.c - an entry reused right after a load that made the loader give
 * pages back (a big file, then a small one punches out the rest of the
 * buffer) still holds exactly the next file's bytes: the loader must not
 * answer before the hole is punched, or the punch lands on the next load.
 */
#define _GNU_SOURCE
#include "helpers.h"

#include <errno.h>

/* above the loader's 64 MiB trim budget, so that the small load after it
 * gives the pages back */
#define BIG   (72u << 20)
#define SMALL 12345u

static void load_check(asyncload_worker *w, const char *path, uint64_t size, uint64_t seed)
{
	asyncload_entry *e;
	CHECK_OK(asyncload_worker_request(w, path));
	CHECK_OK(t_get(w, &e));
	CHECK_OK(asyncload_entry_error(e));
	CHECK(asyncload_entry_size(e) == size, "%s: %llu bytes", path,
	      (unsigned long long)asyncload_entry_size(e));
	CHECK(t_check_pattern(asyncload_entry_data(e), size, seed, 0), "%s: wrong bytes", path);
	asyncload_entry_release(e);
}

int main(void)
{
	t_init("reuse");
	t_require_io_uring();
	const char *dir = t_tmpdir();
	char big[4096], small[4096], empty[4096];
	snprintf(big, sizeof(big), "%s", t_write_file(dir, "big", BIG, 1));
	snprintf(small, sizeof(small), "%s", t_write_file(dir, "small", SMALL, 2));
	snprintf(empty, sizeof(empty), "%s", t_write_file(dir, "empty", 0, 3));

	/* queue depth 1: every load lands in the same entry */
	struct asyncload_options o = t_opts(1, 80u << 20, 1);
	asyncload_loader *l = t_start(&o, NULL);
	asyncload_worker *w = NULL;
	CHECK_OK(asyncload_worker_get(l, 0, &w));
	for (int round = 0; round < 12; round++) {
		load_check(w, big, BIG, 1);
		load_check(w, small, SMALL, 2);   /* gives back ~72 MiB */
		load_check(w, small, SMALL, 2);   /* must not meet that punch */
		load_check(w, empty, 0, 3);
		load_check(w, small, SMALL, 2);
	}
	asyncload_worker_free(w);
	asyncload_loader_free(l);
	printf("reuse: ok\n");
	return 0;
}
