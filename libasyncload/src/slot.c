/* SPDX-License-Identifier: MIT */
/*
 * slot.c - claiming a worker slot and taking it over. A slot is held by one
 * process at a time (pid and start time in one word, so a reused pid is told
 * apart). When its holder dies, the next claimant takes it over: entries the
 * dead process held or never published are freed at once, reads the loader
 * has are waited for, and completions of the old generation are dropped as
 * they arrive. The crash points of each step are in docs/design.md.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

#define AL_TAKEOVER_WAIT_MS 5000ull

#ifdef ASYNCLOAD_FAULT_POINTS
void al_fault_point(const char *name)
{
	static bool stopped;
	const char *want = getenv("ASYNCLOAD_FAULT");
	if (want && strcmp(want, name) == 0)
		_exit(AL_FAULT_EXIT);
	if (want && !stopped && strncmp(want, "stop:", 5) == 0 && strcmp(want + 5, name) == 0) {
		stopped = true;
		raise(SIGSTOP);
	}
}
#endif

/* Start time (clock ticks since boot) of pid; -ESRCH if gone or a zombie. */
static int proc_start_ticks(pid_t pid, uint64_t *ticks)
{
	char path[64], buf[1024];
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -ESRCH;
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return -ESRCH;
	buf[n] = '\0';
	/* comm may hold spaces and parentheses: fields resume after the last ')' */
	char *p = strrchr(buf, ')');
	if (!p)
		return -ESRCH;
	char state;
	unsigned long long start;
	/* fields 3 (state) .. 22 (starttime) */
	if (sscanf(p + 2, "%c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %*u %*u %*d %*d %*d %*d %*d %*d %llu",
	           &state, &start) != 2)
		return -ESRCH;
	if (state == 'Z' || state == 'X')
		return -ESRCH;
	*ticks = start;
	return 0;
}

static uint64_t owner_word(pid_t pid, uint64_t ticks)
{
	return ((ticks & 0xffffffffull) << 32) | (uint32_t)pid;
}

static bool owner_alive(uint64_t owner)
{
	pid_t pid = (pid_t)(owner & 0xffffffffu);
	uint64_t ticks;
	if (proc_start_ticks(pid, &ticks) < 0)
		return false;
	return owner_word(pid, ticks) == owner;
}

static void free_stale_completions(struct al_header *h, struct al_worker_shm *ws, uint32_t id)
{
	uint32_t *ring = al_cmp_ring(h, ws);
	uint32_t head = atomic_load(&ws->cmp_head), tail = atomic_load(&ws->cmp_tail);
	for (; head != tail; head++) {
		uint32_t local = ring[head & (h->ring_size - 1)];
		if (local < h->queue_depth) {
			atomic_store(&al_entry_at(h, id * h->queue_depth + local)->state, AL_ENTRY_FREE);
			AL_FAULT("reclaim.completion_freed");
		}
	}
	atomic_store(&ws->cmp_head, head);
}

/* Entries the loader has: published and not yet answered, or being read. */
static uint32_t count_queued(struct al_header *h, uint32_t id)
{
	uint32_t n = 0;
	for (uint32_t i = 0; i < h->queue_depth; i++) {
		uint32_t s = atomic_load(&al_entry_at(h, id * h->queue_depth + i)->state);
		n += s == AL_ENTRY_QUEUED || s == AL_ENTRY_LOADING;
	}
	return n;
}

/*
 * A new holder gets the whole queue back: entries the previous holder held,
 * and entries it was filling but never published, are freed at once; its
 * completions already in the ring are dropped, and requests the loader has
 * (published or being read: their buffers are still to be written) are
 * waited for, up to AL_TAKEOVER_WAIT_MS; any later straggler is recognised
 * by its old generation and dropped as it arrives. See internal.h for how
 * the loader's entries are told from unpublished ones.
 */
static int reclaim_entries(asyncload_loader *l, struct al_worker_shm *ws, uint32_t id, struct al_bell *bell)
{
	struct al_header *h = l->hdr;
	uint32_t qd = h->queue_depth, mask = h->ring_size - 1;
	uint8_t *published = calloc(qd, 1);
	if (!published)
		return -ENOMEM;
	/* req_head first (acquire): entries the loader took behind it are LOADING. */
	uint32_t head = atomic_load_explicit(&ws->req_head, memory_order_acquire);
	uint32_t tail = atomic_load_explicit(&ws->req_tail, memory_order_acquire);
	if (tail - head > h->ring_size) /* a corrupt ring: the loader takes what fits */
		tail = head + h->ring_size;
	for (uint32_t p = head; p != tail; p++) {
		uint32_t local = al_req_ring(ws)[p & mask];
		if (local < qd)
			published[local] = 1;
	}
	for (uint32_t i = 0; i < qd; i++) {
		struct al_entry_shm *e = al_entry_at(h, id * qd + i);
		uint32_t s = AL_ENTRY_HELD;
		if (!atomic_compare_exchange_strong(&e->state, &s, AL_ENTRY_FREE) && s == AL_ENTRY_QUEUED &&
		    !published[i])
			atomic_compare_exchange_strong(&e->state, &s, AL_ENTRY_FREE);
	}
	free(published);
	/* Its holder may have died between publishing and ringing. */
	if (head != tail) {
		atomic_thread_fence(memory_order_seq_cst);
		if (atomic_load_explicit(&bell->sleeping, memory_order_relaxed) && atomic_exchange(&bell->sleeping, 0))
			al_ring_bell(bell);
	}
	uint64_t deadline = al_now_ns() + AL_TAKEOVER_WAIT_MS * 1000000ull;
	for (;;) {
		free_stale_completions(h, ws, id);
		if (!count_queued(h, id))
			return 0;
		uint32_t state = al_check_loader_alive(l, true);
		if (state == AL_STATE_NEW || al_now_ns() >= deadline)
			return 0;
		if (al_state_final(state)) {
			/* nobody will answer them: they are ours to reuse */
			atomic_store(&ws->req_head, atomic_load(&ws->req_tail));
			for (uint32_t i = 0; i < h->queue_depth; i++)
				atomic_store(&al_entry_at(h, id * h->queue_depth + i)->state, AL_ENTRY_FREE);
			return 0;
		}
		uint32_t seen = atomic_load(&ws->cmp_tail);
		atomic_fetch_add(&ws->waiters, 1);
		AL_FAULT("reclaim.waiting");
		if (seen == atomic_load(&ws->cmp_head))
			al_futex_wait(&ws->cmp_tail, seen, 20);
		atomic_fetch_sub(&ws->waiters, 1);
	}
}

ASYNCLOAD_EXPORT int asyncload_worker_get(asyncload_loader *l, uint32_t id, asyncload_worker **ret)
{
	if (!ret)
		return -EINVAL;
	*ret = NULL;
	if (!l || id >= l->hdr->n_workers)
		return -EINVAL;
	struct al_header *h = l->hdr;
	struct al_worker_shm *ws = al_worker_at(h, id);

	uint64_t ticks;
	pid_t self = getpid();
	if (proc_start_ticks(self, &ticks) < 0)
		return -ESRCH;
	uint64_t me = owner_word(self, ticks);
	uint64_t cur = atomic_load(&ws->owner);
	for (;;) {
		if (cur == me || (cur != 0 && owner_alive(cur)))
			return -EBUSY;
		if (atomic_compare_exchange_strong(&ws->owner, &cur, me))
			break;
	}
	AL_FAULT("claim.owned");
	/* Only the holder's threads sleep on this slot: a holder that died in
	 * a wait left its count raised, and the loader would then make a wake
	 * call on every completion. */
	atomic_store(&ws->waiters, 0);

	asyncload_worker *w = calloc(1, sizeof(*w));
	if (!w) {
		atomic_store(&ws->owner, 0);
		return -ENOMEM;
	}
	w->loader = l;
	w->shm = ws;
	w->req_ring = al_req_ring(ws);
	w->cmp_ring = al_cmp_ring(h, ws);
	w->id = id;
	w->bell = &h->bells[id % h->n_threads];
	/* A new generation: whatever the previous holder left is recognisable. */
	w->gen = atomic_fetch_add(&ws->gen, 1) + 1;
	AL_FAULT("claim.gen_bumped");
	int r = reclaim_entries(l, ws, id, w->bell);
	if (r < 0) {
		atomic_store(&ws->owner, 0);
		free(w);
		return r;
	}
	pthread_mutex_init(&w->lock, NULL);
	*ret = w;
	return 0;
}

ASYNCLOAD_EXPORT asyncload_worker *asyncload_worker_free(asyncload_worker *w)
{
	if (!w)
		return NULL;
	uint64_t ticks;
	pid_t self = getpid();
	if (proc_start_ticks(self, &ticks) == 0) {
		uint64_t me = owner_word(self, ticks);
		atomic_compare_exchange_strong(&w->shm->owner, &me, 0);
	}
	pthread_mutex_destroy(&w->lock);
	free(w);
	return NULL;
}

