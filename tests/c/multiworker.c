/* SPDX-License-Identifier: MIT */
/*
 * multiworker.c - several workers in forked processes at once. The loader
 * is created and spawned first, then each child claims its own worker id
 * and loads its own files plus a common set, keeping its queue full. Every
 * child must get exactly its requests back, byte-exact, and nothing that
 * another worker asked for. One child polls with try_get instead of
 * sleeping in wait_get.
 */
#define _GNU_SOURCE
#include "helpers.h"

#include <errno.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define N_WORKERS 5
#define N_OWN     40
#define N_COMMON  40
#define DEPTH     8

static uint64_t size_of(int w, int i)
{
	/* Deterministic, varied, some around page boundaries. */
	static const uint64_t s[] = { 0, 1, 4095, 4096, 4097, 30000, 100000, 777 };
	return s[(unsigned)(w * 3 + i) % 8] + (uint64_t)i;
}

static uint64_t seed_of(int w, int i)
{
	return (uint64_t)w * 100000 + (uint64_t)i;
}

static void name_of(char *buf, size_t len, int w, int i)
{
	/* w == N_WORKERS: the common set */
	snprintf(buf, len, "w%d_%03d", w, i);
}

static void verify(const char *dir, asyncload_entry *e, int me, int *counts)
{
	const char *path = asyncload_entry_path(e);
	const char *slash = strrchr(path, '/');
	int w, i;

	CHECK(slash && sscanf(slash + 1, "w%d_%d", &w, &i) == 2, "bad path %s", path);
	CHECK(strncmp(path, dir, strlen(dir)) == 0, "bad path %s", path);
	CHECK(w == me || w == N_WORKERS, "worker %d got %s, requested by another worker", me, path);
	CHECK(i >= 0 && i < (w == me ? N_OWN : N_COMMON));
	CHECK_OK(asyncload_entry_error(e));
	CHECK(asyncload_entry_size(e) == size_of(w, i), "%s: size %llu", path,
	      (unsigned long long)asyncload_entry_size(e));
	CHECK(t_check_pattern(asyncload_entry_data(e), size_of(w, i), seed_of(w, i), 0), "%s", path);
	counts[(w == me ? 0 : N_OWN) + i]++;
}

static int get_one(asyncload_worker *w, asyncload_entry **e, bool poll)
{
	if (!poll)
		return t_get(w, e);
	int64_t end = t_now_ms() + T_WAIT_MS;
	for (;;) {
		int r = asyncload_worker_try_get(w, e);
		if (r != -EAGAIN)
			return r;
		CHECK(t_now_ms() < end, "try_get: nothing within %d ms", T_WAIT_MS);
		usleep(200);
	}
}

static void work(asyncload_loader *l, const char *dir, int me, bool poll)
{
	asyncload_worker *w = NULL;
	asyncload_entry *e;
	int counts[N_OWN + N_COMMON] = { 0 };
	int sent = 0, done = 0;
	char name[64];

	CHECK_OK(asyncload_worker_get(l, (uint32_t)me, &w));
	for (int k = 0; k < N_OWN + N_COMMON; k++) {
		if (k < N_OWN)
			name_of(name, sizeof(name), me, k);
		else
			name_of(name, sizeof(name), N_WORKERS, (k - N_OWN + me * 7) % N_COMMON);
		const char *path = t_path(dir, name);
		int r;
		while ((r = asyncload_worker_request(w, path)) == -EAGAIN) {
			CHECK_OK(get_one(w, &e, poll));
			verify(dir, e, me, counts);
			asyncload_entry_release(e);
			done++;
		}
		CHECK_OK(r);
		sent++;
	}
	while (done < sent) {
		CHECK_OK(get_one(w, &e, poll));
		verify(dir, e, me, counts);
		asyncload_entry_release(e);
		done++;
	}
	for (int k = 0; k < N_OWN + N_COMMON; k++)
		CHECK(counts[k] == 1, "worker %d: slot %d came back %d times", me, k, counts[k]);
	CHECK_RET(asyncload_worker_try_get(w, &e), -EAGAIN);
	asyncload_worker_free(w);
}

int main(void)
{
	const char *dir;
	char name[64];
	pid_t kids[N_WORKERS];

	t_init("multiworker");
	t_require_io_uring();
	dir = t_tmpdir();
	for (int w = 0; w <= N_WORKERS; w++)
		for (int i = 0; i < (w == N_WORKERS ? N_COMMON : N_OWN); i++) {
			name_of(name, sizeof(name), w, i);
			t_write_file(dir, name, size_of(w, i), seed_of(w, i));
		}

	struct asyncload_options o = t_opts(DEPTH, 1 << 20, N_WORKERS);
	asyncload_loader *l = t_start(&o, NULL);

	for (int k = 1; k < N_WORKERS; k++) {
		kids[k] = fork();
		CHECK(kids[k] >= 0);
		if (kids[k] == 0) {
			work(l, dir, k, k == N_WORKERS - 1);
			_exit(0);
		}
	}
	/* The creator is a worker too, at the same time as its children. */
	work(l, dir, 0, false);
	for (int k = 1; k < N_WORKERS; k++)
		t_wait_child_ok(kids[k], "worker child");

	/* Ids freed by exiting children can be claimed again. */
	asyncload_worker *w = NULL;
	CHECK_OK(asyncload_worker_get(l, 1, &w));
	asyncload_worker_free(w);

	asyncload_loader_free(l);
	printf("multiworker: ok\n");
	return T_EXIT_PASS;
}
