/* SPDX-License-Identifier: MIT */
/*
 * worker.c - the worker side: claiming a worker slot, queueing requests on
 * its ring, taking completions (sleeping on a futex when there are none), and
 * the entry accessors.
 *
 * A slot is held by one process at a time (pid and start time in one word).
 * When its holder dies, the next claimant takes it over: entries the dead
 * process held are freed, and completions of its requests still on the way
 * are recognised by their old generation and freed as they arrive.
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

#define AL_WAIT_SLICE_MS 100 /* how often a sleeping worker looks for a dead loader */
#define AL_TAKEOVER_WAIT_MS 5000ull

#ifdef ASYNCLOAD_FAULT_POINTS
void al_fault_point(const char *name)
{
	const char *want = getenv("ASYNCLOAD_FAULT");
	if (want && strcmp(want, name) == 0)
		_exit(AL_FAULT_EXIT);
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

static bool loader_refuses(asyncload_loader *l)
{
	struct al_header *h = l->hdr;
	uint32_t state = atomic_load_explicit(&h->state, memory_order_acquire);
	return state == AL_STATE_STOPPING || al_state_final(state) ||
	       atomic_load_explicit(&h->shutdown_requested, memory_order_relaxed);
}

ASYNCLOAD_EXPORT int asyncload_worker_submit(asyncload_worker *w, const char *path, uint64_t offset,
                                             uint64_t length, uint64_t tag)
{
	if (!w || !path)
		return -EINVAL;
	if (path[0] == '\0')
		return -EINVAL;
	size_t plen = strnlen(path, ASYNCLOAD_PATH_MAX);
	if (plen >= ASYNCLOAD_PATH_MAX)
		return -ENAMETOOLONG;
	asyncload_loader *l = w->loader;
	struct al_header *h = l->hdr;
	if (loader_refuses(l))
		return -ESHUTDOWN;

	/* Relative paths mean the caller's directory, not the loader's. */
	char cwd[ASYNCLOAD_PATH_MAX];
	size_t prefix = 0;
	if (path[0] != '/' && !h->confined) {
		if (!getcwd(cwd, sizeof(cwd)))
			return -errno;
		prefix = strlen(cwd);
		if (prefix == 1) /* "/" */
			prefix = 0;
		if (prefix + 1 + plen >= ASYNCLOAD_PATH_MAX)
			return -ENAMETOOLONG;
	}

	pthread_mutex_lock(&w->lock);
	uint32_t qd = h->queue_depth, base = w->id * qd;
	struct al_entry_shm *e = NULL;
	uint32_t local = 0;
	/* The lowest free entry, not the next in turn: a worker that keeps few
	 * loads in flight then cycles few buffers, which stay in the loader's
	 * CPU cache (a cached file is one copy into them). */
	for (uint32_t n = 0; n < qd; n++) {
		local = n;
		struct al_entry_shm *c = al_entry_at(h, base + local);
		if (atomic_load_explicit(&c->state, memory_order_acquire) == AL_ENTRY_FREE) {
			e = c;
			break;
		}
	}
	if (!e) {
		pthread_mutex_unlock(&w->lock);
		return -EAGAIN;
	}
	atomic_store_explicit(&e->state, AL_ENTRY_QUEUED, memory_order_relaxed);
	AL_FAULT("submit.marked");
	e->gen = w->gen;
	e->error = 0;
	e->size = 0;
	e->data_skew = 0;
	e->inline_answer = 0;
	e->offset = offset;
	e->length = length;
	e->tag = tag;
	e->open_off = 0;
	if (prefix) {
		memcpy(e->path, cwd, prefix);
		e->path[prefix] = '/';
		memcpy(e->path + prefix + 1, path, plen + 1);
		e->name_off = (uint32_t)prefix + 1;
	} else if (path[0] != '/' && !h->confined) {
		e->path[0] = '/';
		memcpy(e->path + 1, path, plen + 1);
		e->name_off = 1;
	} else {
		memcpy(e->path, path, plen + 1);
		e->name_off = 0;
		/* An absolute path inside root is opened relative to it. */
		if (h->confined && path[0] == '/') {
			if (h->root_len == 1) /* root is "/" */
				e->open_off = 1;
			else if (plen > h->root_len && memcmp(path, h->root, h->root_len) == 0 &&
			         path[h->root_len] == '/')
				e->open_off = h->root_len + 1;
		}
	}
	struct al_worker_shm *ws = w->shm;
	uint32_t tail = atomic_load_explicit(&ws->req_tail, memory_order_relaxed);
	w->req_ring[tail & (h->ring_size - 1)] = local;
	AL_FAULT("submit.slot_written");
	atomic_store_explicit(&ws->req_tail, tail + 1, memory_order_release);
	AL_FAULT("submit.published");
	atomic_fetch_add_explicit(&w->in_flight, 1, memory_order_relaxed);
	pthread_mutex_unlock(&w->lock);

	/* Ring only a sleeping loader: a busy one looks at the rings anyway.
	 * The first ringer clears the flag, so a burst of requests costs one
	 * wake-up; the loader sets it again before it next sleeps. */
	atomic_thread_fence(memory_order_seq_cst);
	if (atomic_load_explicit(&w->bell->sleeping, memory_order_relaxed) &&
	    atomic_exchange(&w->bell->sleeping, 0))
		al_ring_bell(w->bell);
	return 0;
}

ASYNCLOAD_EXPORT int asyncload_worker_request_range(asyncload_worker *w, const char *path, uint64_t offset,
                                                    uint64_t length)
{
	return asyncload_worker_submit(w, path, offset, length, 0);
}

ASYNCLOAD_EXPORT int asyncload_worker_request(asyncload_worker *w, const char *path)
{
	return asyncload_worker_submit(w, path, 0, ASYNCLOAD_WHOLE_FILE, 0);
}

/* The loader is gone: answer what it never took, so nothing is lost. */
static int take_orphan(asyncload_worker *w, asyncload_entry **ret)
{
	struct al_header *h = w->loader->hdr;
	struct al_worker_shm *ws = w->shm;
	uint32_t head = atomic_load(&ws->req_head), tail = atomic_load(&ws->req_tail);
	while (head != tail) {
		uint32_t local = w->req_ring[head & (h->ring_size - 1)];
		atomic_store(&ws->req_head, ++head);
		AL_FAULT("orphan.taken");
		if (local >= h->queue_depth)
			continue;
		struct al_entry_shm *e = al_entry_at(h, w->id * h->queue_depth + local);
		if (e->gen != w->gen) {
			atomic_store(&e->state, AL_ENTRY_FREE);
			continue;
		}
		e->error = -ESHUTDOWN;
		e->size = 0;
		atomic_store(&e->state, AL_ENTRY_HELD);
		atomic_fetch_sub_explicit(&w->in_flight, 1, memory_order_relaxed);
		*ret = (asyncload_entry *)e;
		return 0;
	}
	return -ESHUTDOWN;
}

/* Moves up to max completed entries of the current generation to out[];
 * w->lock held. Returns how many. */
static unsigned take_completions(asyncload_worker *w, asyncload_entry **out, unsigned max)
{
	struct al_header *h = w->loader->hdr;
	struct al_worker_shm *ws = w->shm;
	unsigned n = 0;
	uint32_t head = atomic_load_explicit(&ws->cmp_head, memory_order_relaxed);
	uint32_t tail = atomic_load_explicit(&ws->cmp_tail, memory_order_acquire);
	while (head != tail && n < max) {
		uint32_t local = w->cmp_ring[head & (h->ring_size - 1)];
		head++;
		if (local >= h->queue_depth)
			continue;
		struct al_entry_shm *e = al_entry_at(h, w->id * h->queue_depth + local);
		if (e->gen != w->gen) { /* a request of the slot's previous holder */
			atomic_store(&e->state, AL_ENTRY_FREE);
			continue;
		}
		atomic_store_explicit(&e->state, AL_ENTRY_HELD, memory_order_relaxed);
		AL_FAULT("take.held");
		atomic_fetch_sub_explicit(&w->in_flight, 1, memory_order_relaxed);
		out[n++] = (asyncload_entry *)e;
	}
	atomic_store_explicit(&ws->cmp_head, head, memory_order_release);
	return n;
}

/* Up to max entries without sleeping: a count, -EAGAIN if none is ready,
 * -ESHUTDOWN once the loader is gone and nothing is left. */
static int try_get_batch(asyncload_worker *w, asyncload_entry **out, unsigned max)
{
	pthread_mutex_lock(&w->lock);
	int r = (int)take_completions(w, out, max);
	if (r == 0) {
		r = -EAGAIN;
		if (al_state_final(al_check_loader_alive(w->loader, false)))
			r = take_orphan(w, out) == 0 ? 1 : -ESHUTDOWN;
	}
	pthread_mutex_unlock(&w->lock);
	return r;
}

ASYNCLOAD_EXPORT int asyncload_worker_try_get(asyncload_worker *w, asyncload_entry **ret)
{
	if (!w || !ret)
		return -EINVAL;
	*ret = NULL;
	int r = try_get_batch(w, ret, 1);
	return r > 0 ? 0 : r;
}

ASYNCLOAD_EXPORT int asyncload_worker_wait_batch(asyncload_worker *w, asyncload_entry **out, unsigned max,
                                                 int timeout_ms)
{
	if (!w || !out || max == 0)
		return -EINVAL;
	struct al_worker_shm *ws = w->shm;
	uint64_t deadline = timeout_ms < 0 ? UINT64_MAX : al_now_ns() + (uint64_t)timeout_ms * 1000000ull;
	for (;;) {
		int r = try_get_batch(w, out, max);
		if (r != -EAGAIN)
			return r;
		uint64_t now = al_now_ns();
		if (now >= deadline)
			return -ETIMEDOUT;
		uint64_t left_ms = deadline == UINT64_MAX ? AL_WAIT_SLICE_MS : (deadline - now + 999999) / 1000000;
		int slice = left_ms < AL_WAIT_SLICE_MS ? (int)left_ms : AL_WAIT_SLICE_MS;

		uint32_t seen = atomic_load(&ws->cmp_tail);
		atomic_fetch_add(&ws->waiters, 1);
		AL_FAULT("wait.sleeping");
		atomic_thread_fence(memory_order_seq_cst);
		int rc = 0;
		if (seen == atomic_load(&ws->cmp_head) &&
		    !al_state_final(al_check_loader_alive(w->loader, false)))
			rc = al_futex_wait(&ws->cmp_tail, seen, slice);
		atomic_fetch_sub(&ws->waiters, 1);
		if (rc == -EINTR)
			return -EINTR;
	}
}

ASYNCLOAD_EXPORT int asyncload_worker_wait_get(asyncload_worker *w, asyncload_entry **ret, int timeout_ms)
{
	if (!w || !ret)
		return -EINVAL;
	*ret = NULL;
	int r = asyncload_worker_wait_batch(w, ret, 1, timeout_ms);
	return r > 0 ? 0 : r;
}

ASYNCLOAD_EXPORT uint32_t asyncload_worker_in_flight(const asyncload_worker *w)
{
	return w ? atomic_load_explicit(&((asyncload_worker *)w)->in_flight, memory_order_relaxed) : 0;
}

/* ---- entries ---- */

ASYNCLOAD_EXPORT const char *asyncload_entry_path(const asyncload_entry *e)
{
	const struct al_entry_shm *s = (const struct al_entry_shm *)e;
	return s ? s->path + s->name_off : NULL;
}

ASYNCLOAD_EXPORT const void *asyncload_entry_data(const asyncload_entry *e)
{
	struct al_entry_shm *s = (struct al_entry_shm *)e;
	return s ? al_entry_buffer(s) + s->data_skew : NULL;
}

ASYNCLOAD_EXPORT uint64_t asyncload_entry_size(const asyncload_entry *e)
{
	return e ? ((const struct al_entry_shm *)e)->size : 0;
}

ASYNCLOAD_EXPORT uint64_t asyncload_entry_offset(const asyncload_entry *e)
{
	return e ? ((const struct al_entry_shm *)e)->offset : 0;
}

ASYNCLOAD_EXPORT uint64_t asyncload_entry_tag(const asyncload_entry *e)
{
	return e ? ((const struct al_entry_shm *)e)->tag : 0;
}

ASYNCLOAD_EXPORT int asyncload_entry_error(const asyncload_entry *e)
{
	return e ? ((const struct al_entry_shm *)e)->error : -EINVAL;
}

ASYNCLOAD_EXPORT void asyncload_entry_release(asyncload_entry *e)
{
	if (!e)
		return;
	struct al_entry_shm *s = (struct al_entry_shm *)e;
	uint32_t held = AL_ENTRY_HELD;
	atomic_compare_exchange_strong(&s->state, &held, AL_ENTRY_FREE);
	AL_FAULT("release.freed");
}
