/* SPDX-License-Identifier: MIT */
/*
 * steps.c - the steps of one request: what happens next to a request when
 * one of its operations completes. It decides; the engine (engine.h)
 * carries the operations out, and loop.c answers the worker. What the loop
 * does itself without the engine (the cached open, the inline read, answers
 * from the cache) is in inline.c.
 *
 *   cached path: openat2(RESOLVE_CACHED) + fstat inline (both answer from
 *                the kernel's caches or fail with EAGAIN; local mounts only)
 *                -> READ ... -> CLOSE
 *   unconfined:  STATX(path) -> [slot] OPEN + READ (linked) -> READ ... -> CLOSE
 *   confined:    [slot] OPEN(root, path, RESOLVE_BENEATH) -> STATX(fd)
 *                -> READ ... -> CLOSE
 *
 * STATX comes before the open on the slow path so that FIFOs, sockets and
 * devices are refused before anything opens them (opening a FIFO can block
 * forever); every open is O_NONBLOCK besides. A slot bounds the files open
 * at once, which RLIMIT_NOFILE limits. On a filesystem that may block (NFS,
 * FUSE, ...: mounts.c) every op is marked AL_OPF_ASYNC and nothing runs
 * inline.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "loop.h"
#include "mounts.h"

/* An entry gives back the pages its next load will not use once they are
 * more than AL_TRIM_SLACK, and only while the thread's entries hold more
 * than AL_TRIM_BUDGET in all: punching holes and faulting the pages back in
 * for the next large file costs CPU, so a modest working set is kept. */
#define AL_TRIM_SLACK (1ull << 20)
#define AL_TRIM_BUDGET (64ull << 20)

static struct al_entry_shm *entry_of(struct loop *lp, uint32_t idx)
{
	return al_entry_at(lp->h, idx);
}

const char *al_step_open_path(struct loop *lp, uint32_t idx)
{
	struct al_entry_shm *e = entry_of(lp, idx);
	return e->path + e->open_off;
}

/* Where this request's bytes go: its cache reservation, else the entry's
 * own buffer. */
char *al_step_buffer(struct loop *lp, uint32_t idx)
{
	struct req *r = &lp->reqs[idx];
	return r->cache_res ? (char *)lp->h + r->cache_res : al_entry_own_buffer(lp->h, idx);
}

static uint8_t async_flag(const struct req *r)
{
	return r->remote ? AL_OPF_ASYNC : 0;
}

static void release_slot(struct loop *lp, int32_t slot)
{
	al_fifo_push(&lp->free_slots, (uint32_t)slot);
}

static void close_file(struct loop *lp, struct req *r)
{
	/* The slot is free again only once the kernel has let go of the file. */
	struct al_op op = {.kind = AL_OP_CLOSE, .flags = async_flag(r), .idx = (uint32_t)r->slot,
	                   .fd = r->fd, .slot = r->slot};
	al_loop_submit(lp, &op);
	lp->closes++;
	r->fd = -1;
	r->slot = -1;
}

static void statx_path(struct loop *lp, uint32_t idx)
{
	struct req *r = &lp->reqs[idx];
	struct al_op op = {.kind = AL_OP_STATX, .flags = async_flag(r), .idx = idx, .dirfd = AT_FDCWD,
	                   .path = al_step_open_path(lp, idx), .stx = &r->stx, .fd = -1};
	al_loop_submit(lp, &op);
	r->phase = PH_STATX;
}

void al_step_read_next(struct loop *lp, uint32_t idx, uint8_t extra_flags)
{
	struct req *r = &lp->reqs[idx];
	uint64_t left = r->target - r->got;
	uint32_t ask = left > AL_READ_CHUNK ? AL_READ_CHUNK : (uint32_t)left;
	if (r->direct)
		ask = (ask + AL_PAGE - 1) & ~(AL_PAGE - 1);
	r->last_ask = ask;
	struct al_op op = {.kind = AL_OP_READ, .idx = idx, .fd = r->fd, .slot = r->slot,
	                   .buf = al_step_buffer(lp, idx) + r->got, .len = ask,
	                   .off = r->file_off + r->got};
	op.flags = (uint8_t)(async_flag(r) | extra_flags | (lp->async_reads ? AL_OPF_ASYNC : 0));
	al_loop_submit(lp, &op);
}

uint64_t al_step_open_flags(const struct req *r, bool real_fd)
{
	/* O_NONBLOCK: should the path have become a FIFO since statx, opening
	 * it still returns at once. A descriptor kept in a slot is never
	 * inherited, and the kernel refuses O_CLOEXEC for one. */
	return (uint64_t)(O_RDONLY | O_NOCTTY | O_NONBLOCK | (real_fd ? O_CLOEXEC : 0) | (r->direct ? O_DIRECT : 0));
}

/* Has a slot: open (and, unconfined, read in the same link). */
static void open_file(struct loop *lp, uint32_t idx)
{
	struct req *r = &lp->reqs[idx];
	bool confined = lp->h->confined;
	bool real_fd = confined || !lp->eng.fixed_slots;
	/* The engine reads `how` when the op runs, not now. */
	memset(&r->how, 0, sizeof(r->how));
	r->how.flags = al_step_open_flags(r, real_fd);
	if (confined)
		r->how.resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS;
	struct al_op op = {.kind = AL_OP_OPEN, .idx = idx, .dirfd = confined ? lp->root_fd : AT_FDCWD,
	                   .path = al_step_open_path(lp, idx), .how = &r->how, .fd = -1, .slot = r->slot};
	op.flags = (uint8_t)(async_flag(r) | (real_fd ? AL_OPF_REAL_FD : 0) | (confined ? 0 : AL_OPF_LINK));
	al_loop_submit(lp, &op);
	r->err = 0;
	r->cqes_left = 1;
	if (!confined) {
		al_step_read_next(lp, idx, 0);
		r->cqes_left = 2;
	}
	r->phase = PH_OPEN_READ;
}

static void give_slot_or_wait(struct loop *lp, uint32_t idx)
{
	struct req *r = &lp->reqs[idx];
	if (lp->free_slots.len && !lp->slot_q.len) {
		r->slot = (int32_t)al_fifo_pop(&lp->free_slots);
		open_file(lp, idx);
	} else {
		r->phase = PH_WAIT_SLOT;
		al_fifo_push(&lp->slot_q, idx);
	}
}

void al_steps_hand_out_slots(struct loop *lp)
{
	while (lp->slot_q.len && lp->free_slots.len) {
		uint32_t idx = al_fifo_pop(&lp->slot_q);
		lp->reqs[idx].slot = (int32_t)al_fifo_pop(&lp->free_slots);
		open_file(lp, idx);
	}
}

/*
 * An entry's buffer keeps the pages its largest load touched. So that
 * committed memory follows the bytes in flight rather than the largest file
 * ever seen, punch out what this load will not use. The punched range never
 * overlaps the range being read, so the two need no ordering.
 */
static void trim_entry(struct loop *lp, uint32_t idx, uint64_t will_use)
{
	uint64_t keep = (will_use + AL_PAGE - 1) & ~(uint64_t)(AL_PAGE - 1);
	uint64_t had = lp->committed[idx];
	if (had <= keep + AL_TRIM_SLACK || lp->committed_total <= AL_TRIM_BUDGET)
		return;
	uint64_t buf_off = (uint64_t)(al_entry_own_buffer(lp->h, idx) - (char *)lp->h);
	struct al_op op = {.kind = AL_OP_TRIM, .idx = idx, .fd = lp->region_fd, .off = buf_off + keep,
	                   .len = had - keep};
	al_loop_submit(lp, &op);
	lp->closes++;
	lp->committed[idx] = keep;
	lp->committed_total -= had - keep;
	lp->reqs[idx].trim_pending = true;
}

/*
 * With a cache that has room, the file is read straight into it (no copy
 * later); only loads of a known size are kept, since a /proc-style file may
 * read up to the limit. A second plan (O_DIRECT refused) reserves anew.
 */
static void reserve_cache(struct loop *lp, uint32_t idx)
{
	struct req *r = &lp->reqs[idx];
	if (r->cache_res) {
		al_cache_unreserve(lp->cache, r->cache_res, r->cache_len, true);
		r->cache_res = 0;
	}
	if (!lp->cache || !r->size_known || r->target == 0)
		return;
	/* O_DIRECT wants page-aligned memory; cache lines keep small files dense */
	r->cache_res = al_cache_reserve(lp->cache, r->target, r->direct ? AL_PAGE : AL_CACHELINE);
	r->cache_len = r->cache_res ? r->target : 0;
}

/* The file's type and size are known: decide what to read, or fail. */
int al_step_plan_read(struct loop *lp, uint32_t idx)
{
	struct req *r = &lp->reqs[idx];
	struct al_entry_shm *e = entry_of(lp, idx);
	uint64_t max = lp->h->max_file_size;
	mode_t type = r->stx.stx_mode & S_IFMT;
	if (type == S_IFDIR)
		return -EISDIR;
	if (type != S_IFREG)
		return -EINVAL;
	uint64_t fsize = r->stx.stx_size, start = e->offset;
	bool to_end = e->length == ASYNCLOAD_WHOLE_FILE;
	/* A size of 0 may be a real empty file or a /proc-style file whose size
	 * is unknown until read: read until EOF, up to one byte past the limit. */
	r->size_known = fsize != 0;
	if (!r->size_known) {
		/* past any /proc-style file: nothing to read (and no negative off_t) */
		r->want = start > INT64_MAX - max ? 0 : to_end ? max + 1 : e->length;
	} else {
		uint64_t avail = fsize > start ? fsize - start : 0;
		if (to_end && avail > max)
			return -EFBIG;
		r->want = to_end || avail < e->length ? avail : e->length;
	}
	if (r->want == 0) {
		/* Still opened and read (0 bytes), so permissions are checked,
		 * but never at an offset beyond what off_t holds. */
		r->file_off = 0;
		r->skew = 0;
		r->target = 0;
	} else if (r->direct) {
		r->file_off = start & ~(uint64_t)(AL_PAGE - 1);
		r->skew = (uint32_t)(start - r->file_off);
		r->target = (r->skew + r->want + AL_PAGE - 1) & ~(uint64_t)(AL_PAGE - 1);
	} else {
		r->file_off = start;
		r->skew = 0;
		r->target = r->want;
	}
	r->got = 0;
	reserve_cache(lp, idx);
	trim_entry(lp, idx, r->cache_res ? 0 : r->target);
	return 0;
}

/* The read is over and the file closed (or its close queued): answer. */
void al_step_answer_read(struct loop *lp, uint32_t idx)
{
	struct req *r = &lp->reqs[idx];
	uint64_t size = r->got > r->skew ? r->got - r->skew : 0;
	if (size > r->want)
		size = r->want; /* O_DIRECT rounding, or a file that grew */
	uint64_t touched = (r->got + AL_PAGE - 1) & ~(uint64_t)(AL_PAGE - 1);
	if (r->cache_res) {
		/* kept: the answer points at the cached bytes */
		struct al_entry_shm *e = entry_of(lp, idx);
		al_cache_insert(lp->cache, al_step_open_path(lp, idx), e->offset, e->length, r->cache_res, r->cache_len,
		                r->cache_res + r->skew, size);
		e->data_rel = al_step_buffer(lp, idx) - (char *)e;
		r->cache_res = 0;
	} else if (touched > lp->committed[idx]) {
		lp->committed_total += touched - lp->committed[idx];
		lp->committed[idx] = touched;
	}
	if (!r->size_known && size > lp->h->max_file_size) {
		al_loop_complete(lp, idx, -EFBIG, 0);
		return;
	}
	atomic_fetch_add_explicit(&lp->h->st_bytes_storage, size, memory_order_relaxed);
	al_loop_complete(lp, idx, 0, size);
}

static void finish_read(struct loop *lp, uint32_t idx)
{
	close_file(lp, &lp->reqs[idx]);
	al_step_answer_read(lp, idx);
}

/* Buffered I/O where O_DIRECT is refused (tmpfs, procfs, odd alignments). */
static void restart_buffered(struct loop *lp, uint32_t idx)
{
	struct req *r = &lp->reqs[idx];
	r->direct = false;
	if (!lp->h->confined) {
		int err = al_step_plan_read(lp, idx);
		if (err) {
			al_loop_complete(lp, idx, err, 0);
			return;
		}
	}
	give_slot_or_wait(lp, idx);
}

/* The open failed: the slot holds nothing. */
static void on_open_failed(struct loop *lp, uint32_t idx, int err)
{
	struct req *r = &lp->reqs[idx];
	release_slot(lp, r->slot);
	r->slot = -1;
	if (err == -EINVAL && r->direct)
		restart_buffered(lp, idx);
	else
		al_loop_complete(lp, idx, err, 0);
}

static void on_read(struct loop *lp, uint32_t idx, int res)
{
	struct req *r = &lp->reqs[idx];
	if (res < 0) {
		close_file(lp, r);
		if (res == -EINVAL && r->direct)
			restart_buffered(lp, idx);
		else
			al_loop_complete(lp, idx, res, 0);
		return;
	}
	r->got += (uint64_t)res;
	/* A short read is not the end of the file (network filesystems return
	 * them): only 0 is, or a short O_DIRECT read that reached the size
	 * statx gave (an unaligned resume fails EINVAL and goes buffered). */
	bool direct_end = r->direct && (uint64_t)res < r->last_ask &&
	                  (!r->size_known || r->file_off + r->got >= r->stx.stx_size);
	bool eof = res == 0 || direct_end;
	if (eof || r->got >= r->target) {
		finish_read(lp, idx);
		return;
	}
	al_step_read_next(lp, idx, 0);
	r->phase = PH_READ;
}

/* statx answered (of the path, or of the open file when confined). */
static void on_statx(struct loop *lp, uint32_t idx, int res)
{
	struct req *r = &lp->reqs[idx];
	bool opened = r->phase == PH_FSTAT;
	int err = res < 0 ? res : al_step_plan_read(lp, idx);
	if (err) {
		if (opened)
			close_file(lp, r);
		al_loop_complete(lp, idx, err, 0);
		return;
	}
	if (!r->remote)
		r->remote = al_mounts_dev_may_block(lp->mounts, makedev(r->stx.stx_dev_major, r->stx.stx_dev_minor));
	if (opened) {
		al_step_read_next(lp, idx, 0);
		r->phase = PH_READ;
	} else {
		give_slot_or_wait(lp, idx);
	}
}

static void on_open(struct loop *lp, uint32_t idx, const struct al_completion *c)
{
	struct req *r = &lp->reqs[idx];
	if (lp->h->confined) {
		if (c->res < 0) {
			on_open_failed(lp, idx, c->res);
			return;
		}
		r->fd = c->fd;
		struct al_op op = {.kind = AL_OP_STATX, .flags = async_flag(r), .idx = idx, .path = "",
		                   .stx = &r->stx, .fd = r->fd};
		al_loop_submit(lp, &op);
		r->phase = PH_FSTAT;
		return;
	}
	/* unconfined: the OPEN and the linked READ each answer */
	if (c->kind == AL_OP_OPEN) {
		r->err = c->res < 0 ? c->res : 0;
		if (c->res >= 0)
			r->fd = c->fd;
	} else {
		r->read_res = c->res;
	}
	if (--r->cqes_left)
		return;
	if (r->err) {
		/* the read was cancelled; a real descriptor was never made */
		on_open_failed(lp, idx, r->err);
		return;
	}
	on_read(lp, idx, r->read_res);
}

void al_steps_on_completion(struct loop *lp, const struct al_completion *c)
{
	uint32_t idx = c->idx;
	if (c->kind == AL_OP_CLOSE) {
		lp->closes--;
		release_slot(lp, (int32_t)idx);
		return;
	}
	if (idx >= lp->total)
		return;
	struct req *r = &lp->reqs[idx];
	if (c->kind == AL_OP_TRIM) { /* a failed trim only leaves memory committed */
		lp->closes--;
		r->trim_pending = false;
		if (r->phase == PH_AWAIT_TRIM)
			al_loop_complete(lp, idx, r->done_err, r->done_size);
		return;
	}
	switch (r->phase) {
	case PH_STATX:
	case PH_FSTAT:
		on_statx(lp, idx, c->res);
		return;
	case PH_OPEN_READ:
		on_open(lp, idx, c);
		return;
	case PH_READ:
		on_read(lp, idx, c->res);
		return;
	default:
		return; /* stale completion of a request already answered: cannot happen */
	}
}

void al_steps_start(struct loop *lp, uint32_t idx)
{
	struct req *r = &lp->reqs[idx];
	if (lp->cache && al_inline_from_cache(lp, idx))
		return;
	struct al_place place = {.may_block = true, .root_fd = -1, .rest = NULL};
	if (lp->h->confined) {
		r->remote = lp->root_may_block;
	} else {
		place = al_mounts_place(lp->mounts, al_step_open_path(lp, idx));
		r->remote = place.may_block;
	}
	if (!r->remote && lp->cached_lookup && al_inline_open(lp, idx, &place))
		return;
	if (lp->h->confined)
		give_slot_or_wait(lp, idx);
	else
		statx_path(lp, idx);
}
