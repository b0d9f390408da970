/* SPDX-License-Identifier: MIT */
/*
 * loop.c - one loader thread's event loop: take requests from the rings of
 * the workers it serves, start them (steps.c), feed completions from the
 * engine back to the steps, answer workers and wake the sleeping ones, and
 * sleep when there is nothing to do. Shutdown answers what was never
 * started with -ESHUTDOWN and waits for what is being read.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "loop.h"

#define AL_MAX_SLOTS 4096u
#define AL_MAX_IOWQ 256u           /* blocking ops at once (cold lookups, network) */
#define AL_SLEEP_MS 200            /* idle wake-up to notice a dead parent */
#define AL_BATCH_POLL_US 50        /* one "idle iteration" while batching */
#define AL_PARENT_CHECK_NS (200ull * 1000 * 1000)
#define AL_REAP_BATCH 256u
/* Stopping waits this long for reads in flight, then answers what is still
 * out (a stalled network filesystem) with -ESHUTDOWN, so that workers hear
 * of the stop within a second whatever storage does. */
#define AL_STOP_GRACE_NS (400ull * 1000 * 1000)

bool al_fifo_init(struct fifo *f, uint32_t cap)
{
	f->v = calloc(cap ? cap : 1, sizeof(uint32_t));
	f->cap = cap ? cap : 1;
	f->head = f->len = 0;
	return f->v != NULL;
}

void al_fifo_push(struct fifo *f, uint32_t x)
{
	f->v[(f->head + f->len) % f->cap] = x;
	f->len++;
}

uint32_t al_fifo_pop(struct fifo *f)
{
	uint32_t x = f->v[f->head];
	f->head = (f->head + 1) % f->cap;
	f->len--;
	return x;
}

void al_loop_submit(struct loop *lp, const struct al_op *op)
{
	lp->ops++;
	lp->eng.ops->submit(&lp->eng, op);
}

void al_loop_complete(struct loop *lp, uint32_t idx, int err, uint64_t size)
{
	struct al_header *h = lp->h;
	struct req *r = &lp->reqs[idx];
	struct al_entry_shm *e = al_entry_at(h, idx);
	uint32_t w = idx / h->queue_depth, local = idx % h->queue_depth;
	struct al_worker_shm *ws = al_worker_at(h, w);

	/* The worker may reuse the entry as soon as it has the answer: a hole
	 * still being punched would zero what the next load writes. */
	if (r->trim_pending) {
		r->done_err = err;
		r->done_size = size;
		r->phase = PH_AWAIT_TRIM;
		return;
	}
	if (r->cache_res) { /* not kept (an error): the room goes back */
		al_cache_unreserve(lp->cache, r->cache_res, r->cache_len, true);
		r->cache_res = 0;
	}
	e->error = err;
	e->size = err ? 0 : size;
	e->data_skew = err ? 0 : r->skew;
	uint32_t tail = atomic_load_explicit(&ws->cmp_tail, memory_order_relaxed);
	al_cmp_ring(h, ws)[tail & (h->ring_size - 1)] = local;
	atomic_store_explicit(&ws->cmp_tail, tail + 1, memory_order_release);

	r->phase = PH_IDLE;
	lp->in_flight--;
	if (!lp->touched_mark[w]) {
		lp->touched_mark[w] = 1;
		lp->touched[lp->n_touched++] = w;
	}
}

static void wake_touched(struct loop *lp)
{
	atomic_thread_fence(memory_order_seq_cst);
	for (uint32_t i = 0; i < lp->n_touched; i++) {
		uint32_t w = lp->touched[i];
		struct al_worker_shm *ws = al_worker_at(lp->h, w);
		if (atomic_load(&ws->waiters))
			al_futex_wake(&ws->cmp_tail, INT_MAX);
		lp->touched_mark[w] = 0;
	}
	lp->n_touched = 0;
}

static uint32_t pull_requests(struct loop *lp)
{
	struct al_header *h = lp->h;
	uint32_t pulled = 0, mask = h->ring_size - 1;
	for (uint32_t w = lp->tid; w < h->n_workers; w += h->n_threads) {
		struct al_worker_shm *ws = al_worker_at(h, w);
		uint32_t head = atomic_load_explicit(&ws->req_head, memory_order_relaxed);
		uint32_t tail = atomic_load_explicit(&ws->req_tail, memory_order_acquire);
		if (head == tail)
			continue;
		if (tail - head > h->ring_size) /* a corrupt ring: take what fits */
			tail = head + h->ring_size;
		uint32_t *ring = al_req_ring(ws);
		for (; head != tail; head++) {
			uint32_t local = ring[head & mask];
			if (local >= h->queue_depth)
				continue;
			uint32_t idx = w * h->queue_depth + local;
			struct req *r = &lp->reqs[idx];
			if (r->phase != PH_IDLE)
				continue; /* already being served: a misbehaving worker */
			struct al_entry_shm *e = al_entry_at(h, idx);
			/* ours now: a takeover tells it from an unpublished entry by this
			 * (before the release store of req_head below) */
			atomic_store_explicit(&e->state, AL_ENTRY_LOADING, memory_order_relaxed);
			e->path[ASYNCLOAD_PATH_MAX - 1] = '\0';
			if (e->open_off >= ASYNCLOAD_PATH_MAX)
				e->open_off = 0;
			memset(r, 0, sizeof(*r));
			/* a cached answer pointed the entry elsewhere; this load is its own */
			e->data_rel = al_entry_own_buffer(h, idx) - (char *)e;
			r->slot = -1;
			r->fd = -1;
			r->direct = h->direct;
			r->phase = PH_NEW;
			lp->in_flight++;
			pulled++;
			if (e->length != ASYNCLOAD_WHOLE_FILE && e->length > h->max_file_size)
				al_loop_complete(lp, idx, -EFBIG, 0);
			else
				al_fifo_push(&lp->new_q, idx);
		}
		atomic_store_explicit(&ws->req_head, head, memory_order_release);
	}
	return pulled;
}

static bool rings_empty(struct loop *lp)
{
	struct al_header *h = lp->h;
	for (uint32_t w = lp->tid; w < h->n_workers; w += h->n_threads) {
		struct al_worker_shm *ws = al_worker_at(h, w);
		if (atomic_load_explicit(&ws->req_head, memory_order_relaxed) !=
		    atomic_load_explicit(&ws->req_tail, memory_order_acquire))
			return false;
	}
	return true;
}

/* Whether a confined loader's root reaches a blocking mount: fixed until the
 * mount table changes, so worked out then rather than per request. */
static void note_mounts(struct loop *lp)
{
	lp->root_may_block = lp->h->confined && al_mounts_may_block_under(lp->mounts, lp->h->root);
}

static void dispatch_new(struct loop *lp)
{
	if (al_mounts_refresh(lp->mounts))
		note_mounts(lp);
	while (lp->new_q.len)
		al_steps_start(lp, al_fifo_pop(&lp->new_q));
	lp->idle_polls = 0;
}

/* Not yet started when the loader stops: answered, never dropped. */
static void cancel_unstarted(struct loop *lp)
{
	while (lp->new_q.len)
		al_loop_complete(lp, al_fifo_pop(&lp->new_q), -ESHUTDOWN, 0);
	while (lp->slot_q.len)
		al_loop_complete(lp, al_fifo_pop(&lp->slot_q), -ESHUTDOWN, 0);
}

/* Past the grace period: answer every request still out. Its ops stay with
 * the engine; nothing can reuse its entry, since requests are refused now. */
static void abandon_in_flight(struct loop *lp)
{
	for (uint32_t idx = 0; idx < lp->total && lp->in_flight; idx++) {
		struct req *r = &lp->reqs[idx];
		if (r->phase == PH_IDLE)
			continue;
		r->trim_pending = false;
		if (r->cache_res) /* a stalled read may still write there */
			al_cache_unreserve(lp->cache, r->cache_res, r->cache_len, false);
		r->cache_res = 0;
		al_loop_complete(lp, idx, -ESHUTDOWN, 0);
	}
	wake_touched(lp);
}

static unsigned reap(struct loop *lp)
{
	struct al_completion done[AL_REAP_BATCH];
	unsigned total = 0, n;
	while ((n = lp->eng.ops->reap(&lp->eng, done, AL_REAP_BATCH)) > 0) {
		lp->ops -= n;
		for (unsigned i = 0; i < n; i++)
			al_steps_on_completion(lp, &done[i]);
		total += n;
	}
	return total;
}

static bool parent_gone(struct loop *lp)
{
	if (!lp->parent)
		return false;
	uint64_t now = al_now_ns();
	if (now < lp->next_parent_check)
		return false;
	lp->next_parent_check = now + AL_PARENT_CHECK_NS;
	return getppid() != lp->parent;
}

/* Nothing to do: sleep until a worker rings, an op completes, or a timeout. */
static void sleep_until_work(struct loop *lp, bool batching)
{
	struct al_header *h = lp->h;
	AL_FAULT("loop.sleeping"); /* past the last look at the rings, flag still down */
	uint32_t bell = atomic_load(&lp->bell->doorbell);
	atomic_store(&lp->bell->sleeping, 1);
	atomic_thread_fence(memory_order_seq_cst);
	/* While stopping, only the ops in flight matter: wait for them. */
	bool stop_news = !lp->stopping && (atomic_load(&h->shutdown_requested) || al_loop_stop_signalled());
	if ((!lp->stopping && !rings_empty(lp)) || stop_news) {
		atomic_store(&lp->bell->sleeping, 0);
		return;
	}
	long wait_us = batching ? AL_BATCH_POLL_US : AL_SLEEP_MS * 1000L;
	if (lp->stopping)
		wait_us = AL_SLEEP_MS * 100L; /* look at the grace deadline often enough */
	lp->eng.ops->wait(&lp->eng, &lp->bell->doorbell, bell, wait_us, lp->ops > 0);
	atomic_store(&lp->bell->sleeping, 0);
}

static uint32_t open_file_slots(const struct al_header *h, uint32_t mine)
{
	struct rlimit rl;
	uint32_t nofile = 1024;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
		nofile = rl.rlim_cur > UINT32_MAX ? UINT32_MAX : (uint32_t)rl.rlim_cur;
	/* Real descriptors (confined, or the thread engine): leave room for the rest. */
	uint32_t cap = (nofile > 64 ? nofile - 32 : nofile / 2) / h->n_threads;
	uint32_t n = mine < AL_MAX_SLOTS ? mine : AL_MAX_SLOTS;
	return n > cap ? cap : n;
}

int al_loop_init(struct loop *lp, asyncload_loader *l, const struct al_engine_ops *engine, int region_fd,
                 uint32_t tid)
{
	struct al_header *h = l->hdr;
	memset(lp, 0, sizeof(*lp));
	lp->l = l;
	lp->h = h;
	lp->tid = tid;
	lp->bell = &h->bells[tid];
	lp->root_fd = -1;
	lp->region_fd = region_fd;
	lp->total = h->n_workers * h->queue_depth;
	/* the entries of the workers this thread serves */
	uint32_t mine = ((h->n_workers - tid + h->n_threads - 1) / h->n_threads) * h->queue_depth;
	lp->n_slots = open_file_slots(h, mine);
	if (lp->n_slots == 0)
		return -EMFILE;

	lp->reqs = calloc(lp->total, sizeof(*lp->reqs));
	lp->touched = calloc(h->n_workers, sizeof(uint32_t));
	lp->touched_mark = calloc(h->n_workers, 1);
	lp->committed = calloc(lp->total, sizeof(uint64_t));
	if (!lp->committed || !lp->reqs || !lp->touched || !lp->touched_mark || !al_fifo_init(&lp->new_q, lp->total) ||
	    !al_fifo_init(&lp->slot_q, lp->total) || !al_fifo_init(&lp->free_slots, lp->n_slots))
		return -ENOMEM;
	for (uint32_t s = 0; s < lp->n_slots; s++)
		al_fifo_push(&lp->free_slots, s);

	if (h->confined) {
		lp->root_fd = open(h->root, O_PATH | O_DIRECTORY | O_CLOEXEC);
		if (lp->root_fd < 0)
			return -errno;
	}
	/* Every request may have a read, its close and a trim in flight. */
	struct al_engine_config cfg = {
		.n_slots = lp->n_slots,
		.max_ops = mine * 3 + lp->n_slots + 16,
		.iowq_workers = lp->n_slots < AL_MAX_IOWQ ? lp->n_slots : AL_MAX_IOWQ,
		.region_fd = region_fd,
		.bell = lp->bell,
	};
	lp->eng.ops = engine;
	int r = engine->init(&lp->eng, &cfg);
	if (r < 0) {
		lp->eng.ops = NULL;
		return r;
	}
	/* after the ring: under a tight RLIMIT_NOFILE the ring comes first */
	al_mounts_new(&lp->mounts);
	if (!lp->mounts)
		return -ENOMEM;
	note_mounts(lp);
	lp->async_reads = getenv("ASYNCLOAD_ASYNC_READS") != NULL;
	lp->cached_lookup = getenv("ASYNCLOAD_NO_CACHED_LOOKUP") == NULL;
	lp->inline_reads = !lp->async_reads && getenv("ASYNCLOAD_NO_INLINE_READ") == NULL;
	return 0;
}

void al_loop_free(struct loop *lp)
{
	if (lp->eng.ops)
		lp->eng.ops->exit(&lp->eng, lp->abandoned);
	free(lp->reqs);
	free(lp->touched);
	free(lp->touched_mark);
	free(lp->committed);
	free(lp->new_q.v);
	free(lp->slot_q.v);
	free(lp->free_slots.v);
	al_mounts_free(lp->mounts);
	if (lp->root_fd >= 0)
		close(lp->root_fd);
}

static void flush_and_reap(struct loop *lp, unsigned *reaped)
{
	lp->eng.ops->flush(&lp->eng);
	unsigned n = reap(lp);
	al_steps_hand_out_slots(lp);
	lp->eng.ops->flush(&lp->eng);
	wake_touched(lp);
	if (reaped)
		*reaped = n;
}

void al_loop_run(struct loop *lp)
{
	struct al_header *h = lp->h;
	for (;;) {
		if (!lp->stopping &&
		    (atomic_load(&h->shutdown_requested) || al_loop_stop_signalled() || parent_gone(lp))) {
			lp->stopping = true;
			lp->stop_deadline = al_now_ns() + AL_STOP_GRACE_NS;
			uint32_t running = AL_STATE_RUNNING;
			atomic_compare_exchange_strong(&h->state, &running, AL_STATE_STOPPING);
			/* a signal or a dead parent reached this thread only */
			if (!atomic_exchange(&h->shutdown_requested, 1))
				al_ring_all_bells(h);
		}
		uint32_t pulled = lp->stopping ? 0 : pull_requests(lp);
		if (lp->stopping) {
			cancel_unstarted(lp);
		} else if (lp->new_q.len) {
			if (pulled)
				lp->idle_polls = 0;
			if (lp->new_q.len >= h->dispatch_n || lp->idle_polls >= h->idle_iters)
				dispatch_new(lp);
		}
		al_steps_hand_out_slots(lp);
		unsigned reaped;
		flush_and_reap(lp, &reaped);
		if (lp->stopping && !lp->in_flight && !lp->closes)
			break;
		if (lp->stopping && al_now_ns() >= lp->stop_deadline) {
			abandon_in_flight(lp);
			lp->abandoned = lp->ops > 0;
			break;
		}
		if (pulled || reaped)
			continue;
		bool batching = lp->new_q.len > 0;
		sleep_until_work(lp, batching);
		if (batching && rings_empty(lp))
			lp->idle_polls++;
		flush_and_reap(lp, NULL);
	}
}
