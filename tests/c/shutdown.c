/* SPDX-License-Identifier: MIT */
/*
 * shutdown.c - shutting down with requests in flight answers every request
 * exactly once (its bytes, or -ESHUTDOWN), then wait_get/try_get/request
 * say -ESHUTDOWN, from the moment shutdown is asked. A worker asleep in an endless wait_get is woken by a
 * shutdown from another process. asyncload_loader_run() in a process of
 * its own returns 0 after shutdown, and a second loader for the same
 * region is refused with -EBUSY. No loader process is left behind.
 */
#define _GNU_SOURCE
#include "helpers.h"

#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define N     48
#define FSIZE (512 * 1024)

static void check_gone(pid_t pid)
{
	/* Reaped by asyncload_loader_free(): not even a zombie is left. */
	CHECK(kill(pid, 0) < 0 && errno == ESRCH, "loader pid %d still exists", (int)pid);
}

static void in_flight_shutdown(const char *dir, bool shutdown_from_child)
{
	struct asyncload_options o = t_opts(N, FSIZE, 1);
	pid_t lpid;
	asyncload_entry *e;
	asyncload_worker *w = NULL;
	int got_data = 0, got_shut = 0;
	char name[32];

	o.direct = true; /* so that reads take long enough to overlap */
	asyncload_loader *l = t_start(&o, &lpid);
	CHECK_OK(asyncload_worker_get(l, 0, &w));
	for (int i = 0; i < N; i++) {
		snprintf(name, sizeof(name), "f%02d", i);
		CHECK_OK(asyncload_worker_request(w, t_path(dir, name)));
	}
	if (shutdown_from_child) {
		pid_t pid = fork();
		CHECK(pid >= 0);
		if (pid == 0) {
			CHECK_OK(asyncload_loader_shutdown(l));
			_exit(0);
		}
		t_wait_child_ok(pid, "shutdown child");
	} else {
		CHECK_OK(asyncload_loader_shutdown(l));
	}
	/* A request after shutdown is refused at once. */
	int r = asyncload_worker_request(w, t_path(dir, "f00"));
	CHECK(r == -ESHUTDOWN || r == -EAGAIN, "request after shutdown: %d", r);

	int seen[N] = { 0 };
	for (int k = 0; k < N; k++) {
		r = t_get(w, &e);
		CHECK(r == 0, "entry %d of %d: wait_get %d (%s) before every request was answered",
		      k, N, r, asyncload_strerror(r));
		int i = -1;
		const char *p = strrchr(asyncload_entry_path(e), '/');
		CHECK(p && sscanf(p, "/f%d", &i) == 1 && i >= 0 && i < N);
		CHECK(!seen[i]++, "f%02d answered twice", i);
		if (asyncload_entry_error(e) == 0) {
			CHECK(asyncload_entry_size(e) == FSIZE);
			CHECK(t_check_pattern(asyncload_entry_data(e), FSIZE, (uint64_t)i, 0));
			got_data++;
		} else {
			CHECK_RET(asyncload_entry_error(e), -ESHUTDOWN);
			got_shut++;
		}
		asyncload_entry_release(e);
	}
	printf("shutdown: %d loaded, %d -ESHUTDOWN\n", got_data, got_shut);
	CHECK_RET(t_get(w, &e), -ESHUTDOWN);
	CHECK_RET(asyncload_worker_try_get(w, &e), -ESHUTDOWN);
	CHECK_RET(asyncload_worker_request(w, t_path(dir, "f00")), -ESHUTDOWN);
	CHECK_RET(asyncload_worker_request_range(w, t_path(dir, "f00"), 0, 1), -ESHUTDOWN);
	CHECK(asyncload_worker_in_flight(w) == 0);

	int64_t end = t_now_ms() + T_WAIT_MS;
	while (asyncload_loader_status(l) == 0 && t_now_ms() < end)
		usleep(10000);
	CHECK_RET(asyncload_loader_status(l), -ESHUTDOWN);
	asyncload_worker_free(w);
	asyncload_loader_free(l);
	check_gone(lpid);
}

/*
 * Refused from the moment shutdown is asked, not from when the loader gets
 * round to stopping: with the loader frozen (SIGSTOP) it cannot move to
 * STOPPING, so only the shutdown flag can refuse the request. (Accepted, it
 * would still be answered -ESHUTDOWN later, which no other check here
 * tells apart.)
 */
static void refused_before_loader_stops(const char *dir)
{
	struct asyncload_options o = t_opts(4, FSIZE, 1);
	pid_t lpid;
	asyncload_worker *w = NULL;
	asyncload_entry *e;
	asyncload_loader *l = t_start(&o, &lpid);
	CHECK_OK(asyncload_worker_get(l, 0, &w));
	CHECK(kill(lpid, SIGSTOP) == 0);
	CHECK_OK(asyncload_loader_shutdown(l));
	int r = asyncload_worker_request(w, t_path(dir, "f00"));
	int r_range = asyncload_worker_request_range(w, t_path(dir, "f00"), 0, 1);
	CHECK(kill(lpid, SIGCONT) == 0);
	CHECK_RET(r, -ESHUTDOWN);
	CHECK_RET(r_range, -ESHUTDOWN);
	CHECK_RET(t_get(w, &e), -ESHUTDOWN);
	asyncload_worker_free(w);
	asyncload_loader_free(l);
	check_gone(lpid);
}

static void wake_sleeper(void)
{
	struct asyncload_options o = t_opts(4, 4096, 2);
	pid_t lpid;
	asyncload_loader *l = t_start(&o, &lpid);
	int p[2];

	CHECK(pipe(p) == 0);
	pid_t pid = fork();
	CHECK(pid >= 0);
	if (pid == 0) {
		asyncload_worker *w = NULL;
		asyncload_entry *e;
		CHECK_OK(asyncload_worker_get(l, 1, &w));
		CHECK(write(p[1], "x", 1) == 1);
		int r;
		do
			r = asyncload_worker_wait_get(w, &e, -1);
		while (r == -EINTR);
		_exit(r == -ESHUTDOWN ? 0 : 10);
	}
	char c;
	CHECK(read(p[0], &c, 1) == 1);
	usleep(100000); /* let it fall asleep; correctness does not depend on it */
	CHECK_OK(asyncload_loader_shutdown(l));
	int st = t_wait_child_timeout(pid, T_WAIT_MS);
	CHECK(st != -1, "worker in wait_get(-1) not woken by shutdown");
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "sleeping worker: status 0x%x", st);
	close(p[0]);
	close(p[1]);
	asyncload_loader_free(l);
	check_gone(lpid);
}

static void run_in_child(const char *dir)
{
	struct asyncload_options o = t_opts(4, FSIZE, 1);
	asyncload_loader *l = NULL;
	asyncload_worker *w = NULL;
	asyncload_entry *e;

	CHECK_OK(asyncload_loader_new(&l, &o));
	pid_t pid = fork();
	CHECK(pid >= 0);
	if (pid == 0)
		_exit(asyncload_loader_run(l) == 0 ? 0 : 10);

	int64_t end = t_now_ms() + T_WAIT_MS;
	int s;
	while ((s = asyncload_loader_status(l)) == -EAGAIN && t_now_ms() < end)
		usleep(5000);
	CHECK_RET(s, 0);
	/* One loader per region. */
	CHECK_RET(asyncload_loader_run(l), -EBUSY);
	pid_t other;
	CHECK_RET(asyncload_loader_spawn(l, &other), -EBUSY);

	CHECK_OK(asyncload_worker_get(l, 0, &w));
	CHECK_OK(asyncload_worker_request(w, t_path(dir, "f01")));
	CHECK_OK(t_get(w, &e));
	CHECK_OK(asyncload_entry_error(e));
	CHECK(t_check_pattern(asyncload_entry_data(e), FSIZE, 1, 0));
	asyncload_entry_release(e);
	CHECK_OK(asyncload_loader_shutdown(l));
	t_wait_child_ok(pid, "asyncload_loader_run child");
	CHECK_RET(t_get(w, &e), -ESHUTDOWN);
	asyncload_worker_free(w);
	asyncload_loader_free(l);
}

int main(void)
{
	const char *dir;
	char name[32];

	t_init("shutdown");
	t_require_io_uring();
	dir = t_tmpdir();
	for (int i = 0; i < N; i++) {
		snprintf(name, sizeof(name), "f%02d", i);
		t_write_file(dir, name, FSIZE, (uint64_t)i);
	}
	in_flight_shutdown(dir, false);
	in_flight_shutdown(dir, true);
	refused_before_loader_stops(dir);
	wake_sleeper();
	run_in_child(dir);
	printf("shutdown: ok\n");
	return T_EXIT_PASS;
}
