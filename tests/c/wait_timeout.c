/* SPDX-License-Identifier: MIT */
/*
 * wait_timeout.c - asyncload_worker_wait_get() with nothing outstanding
 * returns -ETIMEDOUT after about its timeout (not at once, not never), 0 ms
 * is a poll, a signal interrupts an endless wait with -EINTR, and a request
 * made while another thread waits wakes it. The bounds are wide on purpose:
 * they catch "returned immediately" and "hung", not slowness.
 */
#define _GNU_SOURCE
#include "helpers.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

static void on_alarm(int sig)
{
	(void)sig;
}

struct waiter {
	asyncload_worker *w;
	int ret;
	asyncload_entry *e;
};

static void *wait_thread(void *arg)
{
	struct waiter *wt = arg;

	do
		wt->ret = asyncload_worker_wait_get(wt->w, &wt->e, 20000);
	while (wt->ret == -EINTR);
	return NULL;
}

int main(void)
{
	asyncload_loader *l = NULL;
	asyncload_worker *w = NULL;
	asyncload_entry *e = NULL;
	struct asyncload_options o = t_opts(4, 1 << 20, 1);
	const char *dir, *good;
	int64_t t0, dt;

	t_init("wait_timeout");
	t_require_io_uring();
	dir = t_tmpdir();
	good = t_write_file(dir, "good", 10, 10);

	/* Before a loader runs, status says so. */
	CHECK_OK(asyncload_loader_new(&l, &o));
	CHECK_RET(asyncload_loader_status(l), -EAGAIN);
	pid_t pid = 0;
	CHECK_OK(asyncload_loader_spawn(l, &pid));
	CHECK(pid > 0);
	CHECK_OK(asyncload_loader_status(l));
	CHECK_OK(asyncload_worker_get(l, 0, &w));

	t0 = t_now_ms();
	CHECK_RET(asyncload_worker_wait_get(w, &e, 300), -ETIMEDOUT);
	dt = t_now_ms() - t0;
	CHECK(dt >= 250 && dt < 5000, "300 ms timeout took %lld ms", (long long)dt);

	t0 = t_now_ms();
	CHECK_RET(asyncload_worker_wait_get(w, &e, 0), -ETIMEDOUT);
	CHECK_RET(asyncload_worker_try_get(w, &e), -EAGAIN);
	dt = t_now_ms() - t0;
	CHECK(dt < 1000, "a 0 ms wait took %lld ms", (long long)dt);

	/* A timeout does not lose a later completion. */
	CHECK_OK(asyncload_worker_request(w, good));
	CHECK_OK(t_get(w, &e));
	CHECK_OK(asyncload_entry_error(e));
	CHECK(t_check_pattern(asyncload_entry_data(e), 10, 10, 0));
	asyncload_entry_release(e);

	/* A signal ends an endless wait with -EINTR (no SA_RESTART). The
	 * timer repeats: a signal that lands while the caller runs in user
	 * space, just before it blocks, is handled without interrupting any
	 * system call (true of every blocking call), so one alone may be
	 * missed; the next one must not be. */
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_alarm;
	CHECK(sigaction(SIGALRM, &sa, NULL) == 0);
	struct itimerval it = { .it_value = { .tv_usec = 200000 }, .it_interval = { .tv_usec = 100000 } };
	CHECK(setitimer(ITIMER_REAL, &it, NULL) == 0);
	t0 = t_now_ms();
	CHECK_RET(asyncload_worker_wait_get(w, &e, -1), -EINTR);
	dt = t_now_ms() - t0;
	struct itimerval off = { { 0, 0 }, { 0, 0 } };
	CHECK(setitimer(ITIMER_REAL, &off, NULL) == 0);
	CHECK(dt < 10000);

	/* Another thread of the same process sleeps in wait_get; a request
	 * from this thread must wake it with the entry. */
	struct waiter wt = { .w = w };
	pthread_t th;
	CHECK(pthread_create(&th, NULL, wait_thread, &wt) == 0);
	usleep(100000);
	CHECK_OK(asyncload_worker_request(w, good));
	CHECK(pthread_join(th, NULL) == 0);
	CHECK_RET(wt.ret, 0);
	CHECK(wt.e && !strcmp(asyncload_entry_path(wt.e), good));
	asyncload_entry_release(wt.e);

	asyncload_worker_free(w);
	asyncload_loader_free(l);
	printf("wait_timeout: ok\n");
	return T_EXIT_PASS;
}
