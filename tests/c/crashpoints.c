/* SPDX-License-Identifier: MIT */
/*
 * crashpoints.c - a worker process that dies right after any step of claim,
 * request, completion, release, wait or takeover loses nothing and
 * duplicates nothing: the next holder of the slot claims it at once (far
 * under the 5 s takeover wait), gets the whole queue, sees only its own
 * requests come back, each once, and the slot's waiter count is back to 0.
 * The deaths come from the library's fault points (AL_FAULT in
 * libasyncload/src, compiled only into the copy this test links), so no
 * step depends on timing. docs/design.md, "Crash points", is the table.
 */
#define _GNU_SOURCE
#include "helpers.h"
#include "internal.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define DEPTH 8
#define SIZE  (64 << 10)
#define FAST_CLAIM_MS 2000 /* the old code waited AL_TAKEOVER_WAIT_MS (5 s) */

static const char *dir;

enum script {
	FULL,     /* claim, request DEPTH, take them all, release them, wait on nothing */
	PUBLISH,  /* claim, request DEPTH, then stay until killed */
	ORPHAN,   /* claim, request DEPTH, then wait: for answers of a loader killed meanwhile */
};

static pid_t loader;

static void victim(asyncload_loader *l, const char *fault, enum script s, int fd)
{
	asyncload_worker *w = NULL;
	asyncload_entry *e[DEPTH];
	char name[16];

	if (fault)
		setenv("ASYNCLOAD_FAULT", fault, 1);
	CHECK_OK(asyncload_worker_get(l, 0, &w));
	for (int i = 0; i < DEPTH; i++) {
		snprintf(name, sizeof(name), "f%d", i);
		CHECK_OK(asyncload_worker_submit(w, t_path(dir, name), 0, ASYNCLOAD_WHOLE_FILE, 1000 + (uint64_t)i));
	}
	if (s != FULL)
		CHECK(write(fd, "x", 1) == 1);
	if (s == PUBLISH)
		for (;;)
			pause();
	for (int i = 0; i < DEPTH; i++)
		CHECK_OK(t_get(w, &e[i]));
	for (int i = 0; i < DEPTH; i++)
		asyncload_entry_release(e[i]);
	asyncload_entry *x;
	CHECK_RET(asyncload_worker_wait_get(w, &x, 1000), -ETIMEDOUT);
	_exit(0);
}

/* Runs a victim that must die at `fault` (NULL: one killed by the parent
 * once its script is done). */
static void run_victim(asyncload_loader *l, const char *fault, enum script s)
{
	int p[2];
	char c;
	CHECK(pipe(p) == 0);
	pid_t pid = fork();
	CHECK(pid >= 0);
	if (pid == 0) {
		close(p[0]);
		victim(l, fault, s, p[1]);
	}
	close(p[1]);
	int status;
	if (s != FULL)
		CHECK(read(p[0], &c, 1) == 1);
	if (s == PUBLISH)
		CHECK(kill(pid, SIGKILL) == 0);
	if (s == ORPHAN) { /* the victim answers its own requests now */
		CHECK(kill(loader, SIGKILL) == 0);
		CHECK(waitpid(loader, NULL, 0) == loader);
	}
	CHECK(waitpid(pid, &status, 0) == pid);
	close(p[0]);
	if (fault)
		CHECK(WIFEXITED(status) && WEXITSTATUS(status) == AL_FAULT_EXIT,
		      "victim never reached fault point %s (status 0x%x)", fault, status);
}

static uint32_t entry_state(asyncload_loader *l, uint32_t i)
{
	return atomic_load(&al_entry_at(l->hdr, i)->state);
}

/* The next holder: quick claim, whole queue, own answers only, each once. */
static void heir(asyncload_loader *l, const char *after)
{
	asyncload_worker *w = NULL;
	asyncload_entry *e;
	char name[16];
	int seen[DEPTH] = { 0 };
	struct al_worker_shm *ws = al_worker_at(l->hdr, 0);

	int64_t t0 = t_now_ms();
	CHECK_OK(asyncload_worker_get(l, 0, &w));
	int64_t took = t_now_ms() - t0;
	CHECK(atomic_load(&ws->waiters) == 0, "after %s: waiters %u after takeover (the loader would wake on "
	      "every completion)", after, atomic_load(&ws->waiters));
	CHECK(asyncload_worker_in_flight(w) == 0, "after %s: %u in flight", after, asyncload_worker_in_flight(w));
	for (int i = 0; i < DEPTH; i++) {
		snprintf(name, sizeof(name), "g%d", i);
		int r = asyncload_worker_submit(w, t_path(dir, name), 0, ASYNCLOAD_WHOLE_FILE, (uint64_t)i);
		CHECK(r == 0, "after %s: request %d of %d: %d (%s): an entry was lost", after, i, DEPTH, r,
		      asyncload_strerror(r));
	}
	/* after the requests: a lost entry shows as EAGAIN above, whatever the clock */
	CHECK(took < FAST_CLAIM_MS, "after %s: claim took %lld ms", after, (long long)took);
	for (int k = 0; k < DEPTH; k++) {
		CHECK_OK(t_get(w, &e));
		uint64_t tag = asyncload_entry_tag(e);
		CHECK(tag < DEPTH, "after %s: tag %llu (%s), which this holder never requested", after,
		      (unsigned long long)tag, asyncload_entry_path(e));
		CHECK(!seen[tag]++, "after %s: g%llu twice", after, (unsigned long long)tag);
		CHECK_OK(asyncload_entry_error(e));
		CHECK(asyncload_entry_size(e) == SIZE);
		CHECK(t_check_pattern(asyncload_entry_data(e), SIZE, 100 + tag, 0), "after %s: g%llu bytes", after,
		      (unsigned long long)tag);
		asyncload_entry_release(e);
	}
	int r = asyncload_worker_wait_get(w, &e, 200);
	CHECK(r == -ETIMEDOUT, "after %s: a stale answer arrived: %d", after, r);
	for (uint32_t i = 0; i < DEPTH; i++)
		CHECK(entry_state(l, i) == AL_ENTRY_FREE, "after %s: entry %u in state %u", after, i,
		      entry_state(l, i));
	asyncload_worker_free(w);
}

int main(void)
{
	char name[16];

	t_init("crashpoints");
	t_require_io_uring();
	dir = t_tmpdir();
	for (int i = 0; i < DEPTH; i++) {
		snprintf(name, sizeof(name), "f%d", i);
		t_write_file(dir, name, SIZE, (uint64_t)i);
		snprintf(name, sizeof(name), "g%d", i);
		t_write_file(dir, name, SIZE, 100 + (uint64_t)i);
	}
	struct asyncload_options o = t_opts(DEPTH, SIZE, 1);
	asyncload_loader *l = t_start(&o, &loader);

	/* Each point of the worker's own steps; the heir claims twice, so a
	 * lost entry would show on every later claim too. */
	static const char *const points[] = {
		"claim.owned", "claim.gen_bumped", "submit.marked", "submit.slot_written",
		"submit.published", "take.held", "release.freed", "wait.sleeping",
	};
	for (size_t i = 0; i < sizeof(points) / sizeof(points[0]); i++) {
		run_victim(l, points[i], FULL);
		heir(l, points[i]);
		heir(l, points[i]);
	}

	/* A takeover that dies while waiting for the loader: the loader is
	 * stopped, so the first victim's published request stays unanswered. */
	CHECK(kill(loader, SIGSTOP) == 0);
	run_victim(l, "submit.published", FULL);
	run_victim(l, "reclaim.waiting", FULL);
	CHECK(kill(loader, SIGCONT) == 0);
	heir(l, "reclaim.waiting");

	/* A takeover that dies while dropping completions its predecessor never
	 * took: wait (by the ring, not the clock) until all are posted. */
	run_victim(l, NULL, PUBLISH);
	struct al_worker_shm *ws = al_worker_at(l->hdr, 0);
	int64_t until = t_now_ms() + T_WAIT_MS;
	while (atomic_load(&ws->cmp_tail) - atomic_load(&ws->cmp_head) < DEPTH) {
		CHECK(t_now_ms() < until, "the loader never answered the killed worker's requests");
		usleep(1000);
	}
	run_victim(l, "reclaim.completion_freed", FULL);
	heir(l, "reclaim.completion_freed");

	/* The loader dies with requests in the ring; a worker answering them
	 * itself (take_orphan) dies; the next holder gets every entry back. */
	CHECK(kill(loader, SIGSTOP) == 0);
	run_victim(l, "orphan.taken", ORPHAN);
	asyncload_worker *w = NULL;
	int64_t t0 = t_now_ms();
	CHECK_OK(asyncload_worker_get(l, 0, &w));
	CHECK(t_now_ms() - t0 < FAST_CLAIM_MS, "claim after the loader died took %lld ms",
	      (long long)(t_now_ms() - t0));
	CHECK(atomic_load(&ws->waiters) == 0);
	CHECK(atomic_load(&ws->req_head) == atomic_load(&ws->req_tail));
	for (uint32_t i = 0; i < DEPTH; i++)
		CHECK(entry_state(l, i) == AL_ENTRY_FREE, "after orphan.taken: entry %u in state %u", i,
		      entry_state(l, i));
	CHECK_RET(asyncload_worker_request(w, t_path(dir, "g0")), -ESHUTDOWN);
	asyncload_worker_free(w);
	asyncload_loader_free(l);
	printf("crashpoints: ok\n");
	return T_EXIT_PASS;
}
