/* SPDX-License-Identifier: MIT */
/*
 * stale_gen.c - a slot holder that queued requests before any loader ran and
 * then died must not pass them on: the next holder of the slot receives only
 * its own completions (its tag, its path), nothing more arrives afterwards,
 * and its in_flight count ends at 0 rather than wrapping below it. Without
 * the generation check on completions the next holder received the dead
 * holder's three entries and in_flight read 4294967293.
 */
#define _GNU_SOURCE
#include "helpers.h"

#include <errno.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define DEAD_REQS 3
#define OWN_REQS  2
#define OWN_TAG   0x0123456789abcdefull
#define DEAD_TAG  0xdeaddeaddeaddeadull

int main(void)
{
	t_init("stale_gen");
	t_require_io_uring();
	const char *dir = t_tmpdir();
	char dead_path[4096];
	snprintf(dead_path, sizeof(dead_path), "%s", t_write_file(dir, "dead", 5000, 1));
	char own_path[4096];
	snprintf(own_path, sizeof(own_path), "%s", t_write_file(dir, "own", 7000, 2));

	struct asyncload_options o = t_opts(8, 1 << 20, 1);
	asyncload_loader *l = NULL;
	CHECK_OK(asyncload_loader_new(&l, &o));

	/* The first holder queues while no loader runs yet, then dies holding
	 * the slot (no asyncload_worker_free). */
	pid_t pid = fork();
	CHECK(pid >= 0);
	if (pid == 0) {
		asyncload_worker *w = NULL;
		CHECK_OK(asyncload_worker_get(l, 0, &w));
		for (int i = 0; i < DEAD_REQS; i++)
			CHECK_OK(asyncload_worker_submit(w, dead_path, 0, ASYNCLOAD_WHOLE_FILE, DEAD_TAG));
		_exit(0);
	}
	t_wait_child_ok(pid, "first holder");

	asyncload_worker *w = NULL;
	CHECK_OK(asyncload_worker_get(l, 0, &w));
	CHECK_OK(asyncload_loader_spawn(l, NULL));
	for (int i = 0; i < OWN_REQS; i++)
		CHECK_OK(asyncload_worker_submit(w, own_path, 0, ASYNCLOAD_WHOLE_FILE, OWN_TAG + (uint64_t)i));

	int own = 0;
	while (own < OWN_REQS) {
		asyncload_entry *e = NULL;
		CHECK_OK(t_get(w, &e));
		uint64_t tag = asyncload_entry_tag(e);
		CHECK(tag == OWN_TAG || tag == OWN_TAG + 1,
		      "received a foreign entry: tag %#llx path %s (in_flight now %u)",
		      (unsigned long long)tag, asyncload_entry_path(e), asyncload_worker_in_flight(w));
		CHECK(strcmp(asyncload_entry_path(e), own_path) == 0, "path %s", asyncload_entry_path(e));
		CHECK_OK(asyncload_entry_error(e));
		CHECK(asyncload_entry_size(e) == 7000);
		CHECK(t_check_pattern(asyncload_entry_data(e), 7000, 2, 0));
		asyncload_entry_release(e);
		own++;
	}
	CHECK(asyncload_worker_in_flight(w) == 0, "in_flight %u after all own completions",
	      asyncload_worker_in_flight(w));

	/* The dead holder's loads have long been served by now: none of them
	 * may surface later either. */
	asyncload_entry *e = NULL;
	int r = asyncload_worker_wait_get(w, &e, 300);
	CHECK(r == -ETIMEDOUT, "a further completion arrived: %d, tag %#llx", r,
	      e ? (unsigned long long)asyncload_entry_tag(e) : 0ull);
	CHECK(asyncload_worker_in_flight(w) == 0, "in_flight %u", asyncload_worker_in_flight(w));

	/* The slot still has its whole queue: depth requests fit at once. */
	for (uint32_t i = 0; i < o.queue_depth; i++)
		CHECK_OK(asyncload_worker_submit(w, own_path, 0, ASYNCLOAD_WHOLE_FILE, OWN_TAG));
	for (uint32_t i = 0; i < o.queue_depth; i++) {
		CHECK_OK(t_get(w, &e));
		CHECK(asyncload_entry_tag(e) == OWN_TAG);
		asyncload_entry_release(e);
	}
	CHECK(asyncload_worker_in_flight(w) == 0);
	asyncload_worker_free(w);
	asyncload_loader_free(l);
	return T_EXIT_PASS;
}
