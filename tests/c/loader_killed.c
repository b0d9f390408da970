/* SPDX-License-Identifier: MIT */
/*
 * loader_killed.c - faults surface: a worker asleep in wait_get learns
 * within about a second that its loader was SIGKILLed (-ESHUTDOWN, not a
 * timeout); requests that were queued when it died are still answered
 * exactly once; SIGTERM shuts the loader down cleanly and SIGINT is ignored
 * (Ctrl-C in a terminal goes to the whole process group).
 */
#define _GNU_SOURCE
#include "helpers.h"

#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static int wait_one(asyncload_worker *w)
{
	asyncload_entry *e;

	return asyncload_worker_wait_get(w, &e, 8000);
}

static void killed_while_waiting(void)
{
	struct asyncload_options o = t_opts(4, 4096, 1);
	pid_t lpid;
	asyncload_loader *l = t_start(&o, &lpid);
	asyncload_worker *w = NULL;
	asyncload_entry *e;

	CHECK_OK(asyncload_worker_get(l, 0, &w));
	t_wait_through_kill(lpid, wait_one, w, "wait_get");
	CHECK_RET(asyncload_loader_status(l), -ESHUTDOWN);
	CHECK_RET(asyncload_worker_request(w, "/etc/hostname"), -ESHUTDOWN);
	CHECK_RET(asyncload_worker_try_get(w, &e), -ESHUTDOWN);
	CHECK_RET(asyncload_worker_wait_get(w, &e, 100), -ESHUTDOWN);
	asyncload_worker_free(w);
	asyncload_loader_free(l);
	CHECK(kill(lpid, 0) < 0 && errno == ESRCH, "killed loader not reaped");
}

static void killed_with_requests_queued(const char *dir)
{
	struct asyncload_options o = t_opts(8, 1 << 20, 1);
	pid_t lpid;
	asyncload_loader *l = t_start(&o, &lpid);
	asyncload_worker *w = NULL;
	asyncload_entry *e;
	char name[16];
	int seen[8] = { 0 };

	CHECK_OK(asyncload_worker_get(l, 0, &w));
	/* Stopped, the loader cannot pick up what comes next. */
	CHECK(kill(lpid, SIGSTOP) == 0);
	for (int i = 0; i < 8; i++) {
		snprintf(name, sizeof(name), "q%d", i);
		CHECK_OK(asyncload_worker_request(w, t_path(dir, name)));
	}
	CHECK(asyncload_worker_in_flight(w) == 8);
	CHECK(kill(lpid, SIGKILL) == 0);
	for (int k = 0; k < 8; k++) {
		int r = t_get(w, &e);
		CHECK(r == 0, "queued request %d of 8 never answered after the loader died: %d (%s)",
		      k, r, asyncload_strerror(r));
		const char *p = strrchr(asyncload_entry_path(e), '/');
		int i = -1;
		CHECK(p && sscanf(p, "/q%d", &i) == 1 && i >= 0 && i < 8);
		CHECK(!seen[i]++, "q%d answered twice", i);
		CHECK_RET(asyncload_entry_error(e), -ESHUTDOWN);
		asyncload_entry_release(e);
	}
	CHECK_RET(t_get(w, &e), -ESHUTDOWN);
	CHECK(asyncload_worker_in_flight(w) == 0);
	asyncload_worker_free(w);
	asyncload_loader_free(l);
}

static void sigterm_and_sigint(const char *dir)
{
	struct asyncload_options o = t_opts(4, 1 << 20, 1);
	pid_t lpid;
	asyncload_loader *l = t_start(&o, &lpid);
	asyncload_worker *w = NULL;
	asyncload_entry *e;

	CHECK_OK(asyncload_worker_get(l, 0, &w));
	CHECK(kill(lpid, SIGINT) == 0);
	usleep(200000);
	CHECK_RET(asyncload_loader_status(l), 0);
	CHECK_OK(asyncload_worker_request(w, t_path(dir, "q0")));
	CHECK_OK(t_get(w, &e));
	CHECK_OK(asyncload_entry_error(e));
	CHECK(t_check_pattern(asyncload_entry_data(e), 1000, 0, 0));
	asyncload_entry_release(e);

	CHECK(kill(lpid, SIGTERM) == 0);
	CHECK_RET(t_get(w, &e), -ESHUTDOWN);
	CHECK_RET(asyncload_loader_status(l), -ESHUTDOWN);
	asyncload_worker_free(w);
	asyncload_loader_free(l);
	CHECK(kill(lpid, 0) < 0 && errno == ESRCH);
}

int main(void)
{
	const char *dir;
	char name[16];

	t_init("loader_killed");
	t_require_io_uring();
	dir = t_tmpdir();
	for (int i = 0; i < 8; i++) {
		snprintf(name, sizeof(name), "q%d", i);
		t_write_file(dir, name, 1000, (uint64_t)i);
	}
	killed_while_waiting();
	sigterm_and_sigint(dir);
	killed_with_requests_queued(dir);
	printf("loader_killed: ok\n");
	return T_EXIT_PASS;
}
