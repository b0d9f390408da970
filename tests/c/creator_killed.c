/* SPDX-License-Identifier: MIT */
/*
 * creator_killed.c - a spawned loader exits by itself when the process that
 * spawned it dies without cleaning up (SIGKILL), so no loader outlives a
 * crashed training script. This test makes itself a child subreaper, so
 * the orphaned loader is re-parented here and can be reaped and inspected
 * instead of vanishing into init.
 */
#define _GNU_SOURCE
#include "helpers.h"

#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

static void one_round(const char *good, bool with_worker)
{
	int p[2];
	pid_t lpid = 0;

	CHECK(pipe(p) == 0);
	pid_t creator = fork();
	CHECK(creator >= 0);
	if (creator == 0) {
		struct asyncload_options o = t_opts(4, 1 << 20, 2);
		pid_t pid;
		asyncload_loader *l = t_start(&o, &pid);
		if (with_worker) {
			/* A worker that is asleep when its creator dies. */
			pid_t wk = fork();
			CHECK(wk >= 0);
			if (wk == 0) {
				asyncload_worker *w = NULL;
				asyncload_entry *e;
				CHECK_OK(asyncload_worker_get(l, 1, &w));
				CHECK_OK(asyncload_worker_request(w, good));
				CHECK_OK(t_get(w, &e));
				asyncload_entry_release(e);
				int r;
				do
					r = asyncload_worker_wait_get(w, &e, 20000);
				while (r == -EINTR);
				_exit(r == -ESHUTDOWN ? 0 : 10);
			}
		}
		CHECK(write(p[1], &pid, sizeof(pid)) == sizeof(pid));
		for (;;)
			pause();
	}
	CHECK(read(p[0], &lpid, sizeof(lpid)) == sizeof(lpid));
	close(p[0]);
	close(p[1]);
	usleep(100000);
	CHECK(kill(creator, SIGKILL) == 0);
	CHECK(waitpid(creator, NULL, 0) == creator);

	/* The loader is ours now (subreaper); it must exit on its own. */
	int st = t_wait_child_timeout(lpid, 5000);
	CHECK(st != -1, "loader %d still running 5 s after its creator was killed", (int)lpid);
	CHECK(WIFEXITED(st) || (WIFSIGNALED(st) && WTERMSIG(st) != SIGKILL),
	      "loader ended with status 0x%x", st);
	printf("creator_killed: loader exited with status 0x%x\n", st);

	/* Reap the worker too; it must have seen the loader go away. */
	int wst;
	pid_t r;
	while ((r = waitpid(-1, &wst, 0)) > 0) {
		CHECK(WIFEXITED(wst) && WEXITSTATUS(wst) == 0,
		      "orphaned worker %d: status 0x%x (wanted -ESHUTDOWN from wait_get)", (int)r, wst);
	}
}

int main(void)
{
	const char *dir, *good;

	t_init("creator_killed");
	t_require_io_uring();
	dir = t_tmpdir();
	good = t_write_file(dir, "good", 100, 1);
	CHECK(prctl(PR_SET_CHILD_SUBREAPER, 1) == 0);

	one_round(good, false);
	one_round(good, true);
	printf("creator_killed: ok\n");
	return T_EXIT_PASS;
}
