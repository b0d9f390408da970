/* SPDX-License-Identifier: MIT */
/*
 * request_errors.c - errors returned by the request call itself, at once:
 * empty path (-EINVAL), path too long (-ENAMETOOLONG), queue full (-EAGAIN
 * once queue_depth entries are held or in flight, and a free entry again
 * after one release), worker id out of range (-EINVAL), a worker id held
 * by another live process (-EBUSY, and free again once it exits).
 */
#define _GNU_SOURCE
#include "helpers.h"

#include <errno.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define DEPTH 6

int main(void)
{
	const char *dir, *good;
	asyncload_entry *held[DEPTH], *e;
	asyncload_worker *w = NULL, *w2 = NULL;
	char *longpath;

	t_init("request_errors");
	t_require_io_uring();
	dir = t_tmpdir();
	good = t_write_file(dir, "good", 5000, 5);

	struct asyncload_options o = t_opts(DEPTH, 1 << 20, 2);
	asyncload_loader *l = t_start(&o, NULL);

	CHECK_RET(asyncload_worker_get(l, 2, &w), -EINVAL);
	CHECK_RET(asyncload_worker_get(l, UINT32_MAX, &w), -EINVAL);
	CHECK_OK(asyncload_worker_get(l, 0, &w));
	CHECK(asyncload_worker_in_flight(w) == 0);

	/* Request-time errors use no entry. */
	CHECK_RET(asyncload_worker_request(w, ""), -EINVAL);
	CHECK_RET(asyncload_worker_request_range(w, "", 0, 10), -EINVAL);
	longpath = malloc(ASYNCLOAD_PATH_MAX + 10);
	CHECK(longpath);
	memset(longpath, 'a', ASYNCLOAD_PATH_MAX + 9);
	longpath[0] = '/';
	longpath[ASYNCLOAD_PATH_MAX + 9] = '\0';
	CHECK_RET(asyncload_worker_request(w, longpath), -ENAMETOOLONG);
	longpath[ASYNCLOAD_PATH_MAX] = '\0';   /* exactly one too long with its NUL */
	CHECK_RET(asyncload_worker_request(w, longpath), -ENAMETOOLONG);
	CHECK_RET(asyncload_worker_request_range(w, longpath, 0, 1), -ENAMETOOLONG);
	CHECK(asyncload_worker_in_flight(w) == 0);

	/* The longest accepted path is queued and completes with a load error. */
	longpath[ASYNCLOAD_PATH_MAX - 1] = '\0';
	CHECK_OK(asyncload_worker_request(w, longpath));
	CHECK_OK(t_get(w, &e));
	CHECK(asyncload_entry_error(e) < 0, "a %u-byte nonexistent path loaded", ASYNCLOAD_PATH_MAX - 1);
	CHECK(strlen(asyncload_entry_path(e)) == ASYNCLOAD_PATH_MAX - 1, "path truncated");
	asyncload_entry_release(e);
	free(longpath);

	/* Queue full: queue_depth requests in flight, then held entries. */
	for (int i = 0; i < DEPTH; i++)
		CHECK_OK(asyncload_worker_request(w, good));
	CHECK_RET(asyncload_worker_request(w, good), -EAGAIN);
	CHECK_RET(asyncload_worker_request_range(w, good, 0, 1), -EAGAIN);
	for (int i = 0; i < DEPTH; i++) {
		CHECK_OK(t_get(w, &held[i]));
		CHECK_OK(asyncload_entry_error(held[i]));
		CHECK(t_check_pattern(asyncload_entry_data(held[i]), 5000, 5, 0));
	}
	CHECK(asyncload_worker_in_flight(w) == 0);
	/* All entries are held by the caller: still full. */
	CHECK_RET(asyncload_worker_request(w, good), -EAGAIN);
	CHECK_RET(asyncload_worker_try_get(w, &e), -EAGAIN);
	/* Held entries stay intact while others are reused. */
	asyncload_entry_release(held[0]);
	CHECK_OK(asyncload_worker_request(w, good));
	CHECK_RET(asyncload_worker_request(w, good), -EAGAIN);
	CHECK_OK(t_get(w, &held[0]));
	for (int i = 0; i < DEPTH; i++) {
		CHECK(t_check_pattern(asyncload_entry_data(held[i]), 5000, 5, 0));
		asyncload_entry_release(held[i]);
	}
	/* The whole depth is usable again. */
	for (int i = 0; i < DEPTH; i++)
		CHECK_OK(asyncload_worker_request(w, good));
	for (int i = 0; i < DEPTH; i++) {
		CHECK_OK(t_get(w, &e));
		asyncload_entry_release(e);
	}

	/* -EBUSY: id 1 held by a live child; free once the child exits. */
	int to_parent[2], to_child[2];
	CHECK(pipe(to_parent) == 0 && pipe(to_child) == 0);
	pid_t pid = fork();
	CHECK(pid >= 0);
	if (pid == 0) {
		asyncload_worker *cw = NULL;
		char c = 0;
		CHECK_OK(asyncload_worker_get(l, 1, &cw));
		CHECK(write(to_parent[1], "x", 1) == 1);
		CHECK(read(to_child[0], &c, 1) == 1);
		_exit(0); /* without worker_free: the slot's holder simply dies */
	}
	char c;
	CHECK(read(to_parent[0], &c, 1) == 1);
	CHECK_RET(asyncload_worker_get(l, 1, &w2), -EBUSY);
	CHECK(write(to_child[1], "x", 1) == 1);
	t_wait_child_ok(pid, "id holder");
	CHECK_OK(asyncload_worker_get(l, 1, &w2));
	CHECK_OK(asyncload_worker_request(w2, good));
	CHECK_OK(t_get(w2, &e));
	CHECK_OK(asyncload_entry_error(e));
	asyncload_entry_release(e);

	/* ... and a slot given back with worker_free is free for others. */
	asyncload_worker_free(w2);
	pid = fork();
	CHECK(pid >= 0);
	if (pid == 0) {
		asyncload_worker *cw = NULL;
		CHECK_OK(asyncload_worker_get(l, 1, &cw));
		asyncload_worker_free(cw);
		_exit(0);
	}
	t_wait_child_ok(pid, "id taker");

	CHECK(asyncload_worker_free(NULL) == NULL);
	CHECK(asyncload_worker_free(w) == NULL);
	CHECK(asyncload_loader_free(l) == NULL);
	CHECK(asyncload_loader_free(NULL) == NULL);
	for (int i = 0; i < 2; i++)
		close(to_parent[i]), close(to_child[i]);
	printf("request_errors: ok\n");
	return T_EXIT_PASS;
}
