/* SPDX-License-Identifier: MIT */
/*
 * trim.c - committed memory follows what the entries hold now, not the
 * largest files they ever held: after large loads, small loads into the same
 * entries give the pages back (down to the loader's trim budget), and the
 * data stays exact throughout.
 */
#define _GNU_SOURCE
#include "helpers.h"

#include <errno.h>

#define DEPTH 4
#define BIG   (40u << 20)
#define SMALL 5000u

static void load_all(asyncload_worker *w, const char *path, uint64_t size, uint64_t seed)
{
	asyncload_entry *e[DEPTH];
	for (int i = 0; i < DEPTH; i++)
		CHECK_OK(asyncload_worker_request(w, path));
	for (int i = 0; i < DEPTH; i++) {
		CHECK_OK(t_get(w, &e[i]));
		CHECK_OK(asyncload_entry_error(e[i]));
		CHECK(asyncload_entry_size(e[i]) == size);
		CHECK(t_check_pattern(asyncload_entry_data(e[i]), size, seed, 0), "%s: wrong bytes", path);
	}
	/* all DEPTH entries held at once: each load lands in its own entry */
	for (int i = 0; i < DEPTH; i++)
		asyncload_entry_release(e[i]);
}

int main(void)
{
	t_init("trim");
	t_require_io_uring();
	const char *dir = t_tmpdir();
	char big[4096], small[4096];
	snprintf(big, sizeof(big), "%s", t_write_file(dir, "big", BIG, 7));
	snprintf(small, sizeof(small), "%s", t_write_file(dir, "small", SMALL, 8));

	struct asyncload_options o = t_opts(DEPTH, 48u << 20, 1);
	pid_t lpid;
	asyncload_loader *l = t_start(&o, &lpid);
	asyncload_worker *w = NULL;
	CHECK_OK(asyncload_worker_get(l, 0, &w));

	long shm0 = t_proc_status_kb(lpid, "RssShmem:");
	load_all(w, big, BIG, 7);
	long shm_big = t_proc_status_kb(lpid, "RssShmem:");
	for (int round = 0; round < 3; round++)
		load_all(w, small, SMALL, 8);
	/* the punches finish before the answers (see reuse.c) */
	long shm_small = t_proc_status_kb(lpid, "RssShmem:");
	printf("trim: loader RssShmem %ld kB idle, %ld kB after %d x %u MiB, %ld kB after small loads\n",
	       shm0, shm_big, DEPTH, BIG >> 20, shm_small);
	CHECK(shm_big - shm0 >= (long)DEPTH * (BIG >> 10) * 9 / 10, "big loads committed only %ld kB",
	      shm_big - shm0);
	/* at most the 64 MiB trim budget (plus one entry's slack) stays */
	CHECK(shm_small - shm0 <= (65L << 10), "still %ld kB committed after small loads",
	      shm_small - shm0);
	load_all(w, big, BIG, 7); /* and the given-back pages serve again */

	asyncload_worker_free(w);
	asyncload_loader_free(l);
	printf("trim: ok\n");
	return 0;
}
