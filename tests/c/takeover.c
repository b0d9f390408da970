/* SPDX-License-Identifier: MIT */
/*
 * takeover.c - a worker process that dies (SIGKILL) holding entries, or with
 * requests still being read, does not leak its slot: another process gets
 * the same worker id, can use the queue at full depth, and sees only its own
 * requests come back (nothing stale from the dead holder), each exactly
 * once.
 */
#define _GNU_SOURCE
#include "helpers.h"

#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define DEPTH 8
#define BIG   (1 << 20)

enum mode { HOLD, IN_FLIGHT, MIXED };

static void victim(asyncload_loader *l, const char *dir, enum mode m, int fd)
{
	asyncload_worker *w = NULL;
	asyncload_entry *e;
	char name[16];

	CHECK_OK(asyncload_worker_get(l, 0, &w));
	for (int i = 0; i < DEPTH; i++) {
		snprintf(name, sizeof(name), "old%d", i);
		CHECK_OK(asyncload_worker_request(w, t_path(dir, name)));
	}
	int hold = m == HOLD ? DEPTH : m == MIXED ? DEPTH / 2 : 0;
	for (int i = 0; i < hold; i++)
		CHECK_OK(t_get(w, &e)); /* and never released */
	CHECK(write(fd, "x", 1) == 1);
	for (;;)
		pause();
}

static void round_trip(asyncload_loader *l, const char *dir, enum mode m)
{
	int p[2];
	char c, name[16];
	asyncload_worker *w = NULL;
	asyncload_entry *e;
	int seen[DEPTH] = { 0 };

	CHECK(pipe(p) == 0);
	pid_t pid = fork();
	CHECK(pid >= 0);
	if (pid == 0)
		victim(l, dir, m, p[1]);
	CHECK(read(p[0], &c, 1) == 1);
	CHECK_RET(asyncload_worker_get(l, 0, &w), -EBUSY);
	CHECK(kill(pid, SIGKILL) == 0);
	CHECK(waitpid(pid, NULL, 0) == pid);
	close(p[0]);
	close(p[1]);

	CHECK_OK(asyncload_worker_get(l, 0, &w));
	CHECK(asyncload_worker_in_flight(w) == 0, "mode %d: %u in flight after takeover", m,
	      asyncload_worker_in_flight(w));
	/* Full depth at once: the dead holder's entries were reclaimed. */
	for (int i = 0; i < DEPTH; i++) {
		snprintf(name, sizeof(name), "new%d", i);
		int r = asyncload_worker_request(w, t_path(dir, name));
		CHECK(r == 0, "mode %d: request %d of %d after takeover: %d (%s)", m, i, DEPTH, r,
		      asyncload_strerror(r));
	}
	for (int k = 0; k < DEPTH; k++) {
		CHECK_OK(t_get(w, &e));
		const char *path = asyncload_entry_path(e);
		const char *s = strrchr(path, '/');
		int i = -1;
		CHECK(s && sscanf(s, "/new%d", &i) == 1 && i >= 0 && i < DEPTH,
		      "mode %d: got '%s' (error %d), which the new holder never requested", m, path,
		      asyncload_entry_error(e));
		CHECK(!seen[i]++, "mode %d: new%d twice", m, i);
		CHECK_OK(asyncload_entry_error(e));
		CHECK(asyncload_entry_size(e) == BIG);
		CHECK(t_check_pattern(asyncload_entry_data(e), BIG, 100 + (uint64_t)i, 0),
		      "mode %d: new%d overwritten", m, i);
		asyncload_entry_release(e);
	}
	/* Nothing stale arrives later either. */
	int r = asyncload_worker_wait_get(w, &e, 300);
	CHECK(r == -ETIMEDOUT, "mode %d: after all requests, wait_get gave %d (%s)", m, r,
	      r == 0 ? asyncload_entry_path(e) : asyncload_strerror(r));
	asyncload_worker_free(w);
}

int main(void)
{
	const char *dir;
	char name[16];

	t_init("takeover");
	t_require_io_uring();
	dir = t_tmpdir();
	for (int i = 0; i < DEPTH; i++) {
		snprintf(name, sizeof(name), "old%d", i);
		t_write_file(dir, name, BIG, (uint64_t)i);
		snprintf(name, sizeof(name), "new%d", i);
		t_write_file(dir, name, BIG, 100 + (uint64_t)i);
	}
	struct asyncload_options o = t_opts(DEPTH, BIG, 2);
	o.direct = true; /* slower reads: more likely still in flight at the kill */
	asyncload_loader *l = t_start(&o, NULL);

	round_trip(l, dir, HOLD);
	round_trip(l, dir, IN_FLIGHT);
	round_trip(l, dir, MIXED);
	round_trip(l, dir, IN_FLIGHT);

	asyncload_loader_free(l);
	printf("takeover: ok\n");
	return T_EXIT_PASS;
}
