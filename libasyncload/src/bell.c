/* SPDX-License-Identifier: MIT */
/*
 * bell.c - sleeping and waking between processes: the clock, shared futexes,
 * the loader threads' doorbells that workers ring, and waking every worker.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/futex.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/file.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

uint64_t al_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Shared (not FUTEX_PRIVATE) futexes: waiter and waker are different processes. */
int al_futex_wait(_Atomic uint32_t *word, uint32_t expected, int timeout_ms)
{
	struct timespec ts, *tsp = NULL;
	if (timeout_ms >= 0) {
		ts.tv_sec = timeout_ms / 1000;
		ts.tv_nsec = (long)(timeout_ms % 1000) * 1000000L;
		tsp = &ts;
	}
	if (syscall(SYS_futex, (uint32_t *)word, FUTEX_WAIT, expected, tsp, NULL, 0) < 0)
		return -errno;
	return 0;
}

int al_futex_wake(_Atomic uint32_t *word, int n)
{
	if (syscall(SYS_futex, (uint32_t *)word, FUTEX_WAKE, n, NULL, NULL, 0) < 0)
		return -errno;
	return 0;
}

void al_ring_bell(struct al_bell *b)
{
	atomic_fetch_add(&b->doorbell, 1);
	al_futex_wake(&b->doorbell, INT_MAX);
}

void al_ring_all_bells(struct al_header *h)
{
	for (uint32_t t = 0; t < h->n_threads; t++)
		al_ring_bell(&h->bells[t]);
}

void al_wake_all_workers(struct al_header *h)
{
	for (uint32_t w = 0; w < h->n_workers; w++)
		al_futex_wake(&al_worker_at(h, w)->cmp_tail, INT_MAX);
}

