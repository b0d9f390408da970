/* SPDX-License-Identifier: MIT */
/*
 * worker.c - the worker side once a slot is held (slot.c): queueing requests
 * on its ring, taking completions in bursts (sleeping on a futex when there
 * are none), answering what a dead loader never took, and the entry
 * accessors.
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
