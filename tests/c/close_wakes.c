/* SPDX-License-Identifier: MIT */
/*
 * close_wakes.c - shutdown wakes an idle loader at once: freeing the loader
 * (which asks it to stop and reaps it) returns in a few ms. An idle loader
 * sleeps up to 200 ms at a time; a shutdown that did not ring its doorbell
 * would wait out that sleep, and nothing else would fail. Each trial lets
 * the loader settle into its idle sleep first, and the median of the trials
 * is compared, so one slow moment of a shared machine does not fail it.
 */
#define _GNU_SOURCE
#include "helpers.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define TRIALS   5
#define LIMIT_MS 80 /* the idle sleep left after 10 ms of settling is ~190 ms */

static int cmp_i64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
	return x < y ? -1 : x > y;
}

static int64_t one_close(const char *path, uint32_t n_threads)
{
	struct asyncload_options o = t_opts(4, 1 << 20, 2);
	o.n_threads = n_threads;
	pid_t pid;
	asyncload_loader *l = t_start(&o, &pid);
	/* one round trip on each worker, so that every loader thread has been
	 * busy and then gone to sleep */
	for (uint32_t id = 0; id < 2; id++) {
		asyncload_worker *w = NULL;
		asyncload_entry *e = NULL;
		CHECK_OK(asyncload_worker_get(l, id, &w));
		CHECK_OK(asyncload_worker_request(w, path));
		CHECK_OK(t_get(w, &e));
		CHECK_OK(asyncload_entry_error(e));
		asyncload_entry_release(e);
		asyncload_worker_free(w);
	}
	usleep(10 * 1000);
	int64_t t0 = t_now_ms();
	asyncload_loader_free(l);
	int64_t ms = t_now_ms() - t0;
	CHECK(kill(pid, 0) < 0 && errno == ESRCH, "loader %d still there", (int)pid);
	return ms;
}

int main(void)
{
	t_init("close_wakes");
	const char *dir = t_tmpdir();
	char path[4096];
	snprintf(path, sizeof(path), "%s", t_write_file(dir, "f", 1000, 4));
	for (uint32_t threads = 1; threads <= 2; threads++) {
		int64_t ms[TRIALS];
		for (int i = 0; i < TRIALS; i++)
			ms[i] = one_close(path, threads);
		qsort(ms, TRIALS, sizeof(ms[0]), cmp_i64);
		printf("%u loader thread(s): close of an idle loader, median %lld ms (min %lld, max %lld)\n",
		       threads, (long long)ms[TRIALS / 2], (long long)ms[0], (long long)ms[TRIALS - 1]);
		CHECK(ms[TRIALS / 2] < LIMIT_MS, "closing an idle loader took %lld ms (median): the "
		      "shutdown did not wake it", (long long)ms[TRIALS / 2]);
	}
	return T_EXIT_PASS;
}
