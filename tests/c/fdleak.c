/* SPDX-License-Identifier: MIT */
/*
 * fdleak.c - no file descriptors or processes left behind: the creator's
 * descriptor count is the same before and after cycles of new / spawn /
 * worker_get / loads / free (and attach / free), no child is left unreaped,
 * and the loader itself does not accumulate descriptors as it opens files,
 * good or failing.
 */
#define _GNU_SOURCE
#include "helpers.h"

#include <dirent.h>
#include <errno.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static void batch(asyncload_worker *w, const char *dir)
{
	static const char *names[] = { "good", "missing", "adir", "fifo", "good" };
	asyncload_entry *e;

	for (int round = 0; round < 4; round++) {
		for (size_t i = 0; i < 5; i++)
			CHECK_OK(asyncload_worker_request(w, t_path(dir, names[i])));
		CHECK_OK(asyncload_worker_request_range(w, t_path(dir, "good"), 10, 10));
		for (size_t i = 0; i < 6; i++) {
			CHECK_OK(t_get(w, &e));
			asyncload_entry_release(e);
		}
	}
}

int main(void)
{
	const char *dir;
	char handle[ASYNCLOAD_HANDLE_MAX];

	t_init("fdleak");
	t_require_io_uring();
	dir = t_tmpdir();
	t_write_file(dir, "good", 20000, 1);
	CHECK(mkdir(t_path(dir, "adir"), 0755) == 0);
	CHECK(mkfifo(t_path(dir, "fifo"), 0644) == 0);

	int before = t_count_fds();
	for (int cycle = 0; cycle < 6; cycle++) {
		struct asyncload_options o = t_opts(8, 1 << 20, 2);
		o.direct = cycle & 1;
		pid_t lpid;
		asyncload_loader *l = t_start(&o, &lpid);
		asyncload_worker *w = NULL;
		CHECK_OK(asyncload_worker_get(l, 0, &w));
		batch(w, dir);
		int lfds = t_settled_fds_of(lpid);
		for (int k = 0; k < 5; k++)
			batch(w, dir);
		int lfds2 = t_settled_fds_of(lpid);
		CHECK(lfds2 == lfds, "loader descriptors grew from %d to %d over 5 batches", lfds, lfds2);

		/* attach / free in the same process */
		CHECK(asyncload_loader_handle(l, handle, sizeof(handle)) > 0);
		asyncload_loader *a = NULL;
		CHECK_OK(asyncload_loader_attach(&a, handle));
		asyncload_worker *w2 = NULL;
		CHECK_OK(asyncload_worker_get(a, 1, &w2));
		batch(w2, dir);
		asyncload_worker_free(w2);
		asyncload_loader_free(a);

		asyncload_worker_free(w);
		asyncload_loader_free(l);

		/* Never spawned. */
		CHECK_OK(asyncload_loader_new(&l, &o));
		asyncload_loader_free(l);
	}
	int after = t_count_fds();
	CHECK(after == before, "descriptors: %d before, %d after 6 cycles", before, after);

	int st;
	errno = 0;
	CHECK(waitpid(-1, &st, WNOHANG) < 0 && errno == ECHILD, "a child process was left behind");
	printf("fdleak: %d descriptors before and after\n", before);
	printf("fdleak: ok\n");
	return T_EXIT_PASS;
}
