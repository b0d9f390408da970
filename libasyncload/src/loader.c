/* SPDX-License-Identifier: MIT */
/*
 * loader.c - the loader: io_uring event loops (one per loader thread) that
 * take requests from their workers' rings, open, size, read and close each
 * file, and post completions back.
 *
 * A request walks these steps (each one a CQE; nothing here waits for a disk):
 *
 *   cached path: openat2(RESOLVE_CACHED) + fstat in the loop (both answer
 *                from the kernel's caches or fail with EAGAIN) -> READ ...
 *                -> CLOSE(fd)
 *   unconfined:  STATX(path) -> [slot] OPENAT(direct slot) + READ (linked)
 *                -> READ ... -> CLOSE(slot)
 *   confined:    [slot] OPENAT2(root, path, RESOLVE_BENEATH) -> STATX(fd)
 *                -> READ ... -> CLOSE(fd)
 *
 * STATX comes before the open on the slow path so that FIFOs, sockets and
 * devices are refused before anything opens them (opening a FIFO can block
 * forever); every open is O_NONBLOCK besides. A "slot" bounds the files open
 * at once, which RLIMIT_NOFILE limits.
 *
 * The loader sleeps when idle: on kernels with IORING_OP_FUTEX_WAIT (6.7+) a
 * futex wait on the doorbell word sits in the ring beside the I/O, so one
 * io_uring_enter() waits for both; elsewhere it falls back to futex() when
 * nothing is in flight and to a short CQE wait otherwise.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/openat2.h>
#include <liburing.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "internal.h"

#ifndef IORING_SETUP_SUBMIT_ALL
#define IORING_SETUP_SUBMIT_ALL (1U << 7)
#endif
#ifndef IORING_SETUP_COOP_TASKRUN
#define IORING_SETUP_COOP_TASKRUN (1U << 8)
#endif
#ifndef IORING_SETUP_SINGLE_ISSUER
#define IORING_SETUP_SINGLE_ISSUER (1U << 12)
#endif
#ifndef IORING_SETUP_DEFER_TASKRUN
#define IORING_SETUP_DEFER_TASKRUN (1U << 13)
#endif
/* Newer than the uapi headers of Debian 12: defined here, probed at run time. */
#define AL_IORING_OP_FUTEX_WAIT 51
#define AL_FUTEX2_SIZE_U32 0x02
#define AL_FUTEX_BITSET_MATCH_ANY 0xffffffffu

#define AL_READ_CHUNK (1u << 30)   /* a read(2) moves at most ~2 GiB; stay below */
#define AL_MAX_SLOTS 4096u
#define AL_MAX_IOWQ 64u        /* io-wq threads for statx/open on a cold cache */
#define AL_SLEEP_MS 200            /* idle wake-up to notice a dead parent */
#define AL_BATCH_POLL_US 50        /* one "idle iteration" while batching */
#define AL_PARENT_CHECK_NS (200ull * 1000 * 1000)
/* An entry gives back the pages its next load will not use once they are
 * more than AL_TRIM_SLACK, and only while the thread's entries hold more
 * than AL_TRIM_BUDGET in all: punching holes and faulting the pages back in
 * for the next large file costs CPU, so a modest working set is kept. */
#define AL_TRIM_SLACK (1ull << 20)
#define AL_TRIM_BUDGET (64ull << 20)

enum op {
	OP_STATX = 1,
	OP_OPEN = 2,
	OP_READ = 3,
	OP_CLOSE = 4,   /* index is a slot, not a request */
	OP_DOORBELL = 5,
	OP_TRIM = 6,    /* index is an entry; nothing waits on it */
};

enum phase {
	PH_IDLE = 0,
	PH_NEW,         /* pulled from a ring, waiting for dispatch */
	PH_STATX,       /* path statx in flight (unconfined) */
	PH_WAIT_SLOT,   /* waiting for an open-file slot */
	PH_OPEN_READ,   /* open + first read in flight (unconfined), or open2 (confined) */
	PH_FSTAT,       /* statx on the open fd in flight (confined) */
	PH_READ,        /* a further read in flight */
	PH_AWAIT_TRIM,  /* answered, held back until its entry's trim is done */
};

struct req {
	uint8_t phase;
	uint8_t cqes_left;
	bool direct;
	bool size_known;
	int32_t err;       /* the open's error, of an open+read pair */
	int32_t read_res;  /* the read's result, of an open+read pair */
	int32_t slot;      /* open-file slot, -1 if none */
	int32_t fd;        /* a real descriptor (cached path, confined), else -1 */
	uint32_t skew;     /* O_DIRECT: data starts this far into the buffer */
	uint64_t want;     /* bytes the entry should hold at most */
	uint64_t file_off; /* where reading starts */
	uint64_t target;   /* bytes to read from file_off */
	uint64_t got;
	uint64_t last_ask;
	bool trim_pending; /* a hole is being punched in this entry's buffer */
	int32_t done_err;  /* the answer, while PH_AWAIT_TRIM */
	uint64_t done_size;
	struct statx stx;
	struct open_how how;
};

struct fifo {
	uint32_t *v;
	uint32_t cap, head, len;
};

struct loop {
	asyncload_loader *l;
	struct al_header *h;
	struct io_uring ring;
	struct req *reqs;
	uint32_t total;
	struct fifo new_q, slot_q, free_slots;
	uint32_t n_slots;
	uint32_t in_flight;     /* requests not yet completed */
	uint32_t closes;        /* CLOSE and TRIM ops not yet reaped */
	uint64_t *committed;    /* per entry: bytes of its buffer that may hold pages */
	uint64_t committed_total; /* their sum over this thread's entries */
	int region_fd;          /* the loader's own descriptor of the region */
	uint32_t pending_sqes;
	uint32_t idle_polls;
	bool futex_op;
	bool async_reads;       /* ASYNCLOAD_ASYNC_READS: reads forced onto io-wq */
	bool cached_lookup;     /* open_from_cache() works on this kernel */
	bool doorbell_armed;
	bool stopping;
	int root_fd;
	pid_t parent;           /* spawned: exit when it is gone */
	uint32_t tid;           /* this thread serves workers tid, tid + n_threads, ... */
	struct al_bell *bell;
	uint64_t next_parent_check;
	uint32_t *touched;      /* workers with new completions to wake */
	uint32_t n_touched;
	uint8_t *touched_mark;
};

static volatile sig_atomic_t al_sigterm;

static bool fifo_init(struct fifo *f, uint32_t cap)
{
	f->v = calloc(cap ? cap : 1, sizeof(uint32_t));
	f->cap = cap ? cap : 1;
	f->head = f->len = 0;
	return f->v != NULL;
}

static void fifo_push(struct fifo *f, uint32_t x)
{
	f->v[(f->head + f->len) % f->cap] = x;
	f->len++;
}

static uint32_t fifo_pop(struct fifo *f)
{
	uint32_t x = f->v[f->head];
	f->head = (f->head + 1) % f->cap;
	f->len--;
	return x;
}

static uint64_t ud(uint32_t idx, enum op op)
{
	return ((uint64_t)idx << 8) | op;
}

static struct io_uring_sqe *get_sqe(struct loop *lp)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&lp->ring);
	if (!sqe) {
		io_uring_submit(&lp->ring);
		lp->pending_sqes = 0;
		sqe = io_uring_get_sqe(&lp->ring);
	}
	if (sqe)
		lp->pending_sqes++;
	return sqe;
}

/* Two SQEs that must sit next to each other (a link). */
static void ensure_sq_space(struct loop *lp, unsigned n)
{
	if (io_uring_sq_space_left(&lp->ring) < n) {
		io_uring_submit(&lp->ring);
		lp->pending_sqes = 0;
	}
}

/* ---- completions back to workers ---- */

static void complete(struct loop *lp, uint32_t idx, int err, uint64_t size)
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

/* ---- the steps of one request ---- */

static void release_slot(struct loop *lp, int32_t slot)
{
	fifo_push(&lp->free_slots, (uint32_t)slot);
}

static void prep_close(struct loop *lp, struct req *r)
{
	struct io_uring_sqe *sqe = get_sqe(lp);
	if (r->fd >= 0) {
		io_uring_prep_close(sqe, r->fd);
		r->fd = -1;
	} else {
		io_uring_prep_close_direct(sqe, (unsigned)r->slot);
	}
	/* The slot is free again only once the kernel has let go of the file. */
	io_uring_sqe_set_data64(sqe, ud((uint32_t)r->slot, OP_CLOSE));
	lp->closes++;
	r->slot = -1;
}

static void prep_statx_path(struct loop *lp, uint32_t idx)
{
	struct req *r = &lp->reqs[idx];
	struct al_entry_shm *e = al_entry_at(lp->h, idx);
	struct io_uring_sqe *sqe = get_sqe(lp);
	io_uring_prep_statx(sqe, AT_FDCWD, e->path + e->open_off, AT_STATX_SYNC_AS_STAT, STATX_TYPE | STATX_SIZE, &r->stx);
	io_uring_sqe_set_data64(sqe, ud(idx, OP_STATX));
	r->phase = PH_STATX;
}

static void prep_read(struct loop *lp, uint32_t idx, struct io_uring_sqe *sqe)
{
	struct req *r = &lp->reqs[idx];
	struct al_entry_shm *e = al_entry_at(lp->h, idx);
	uint64_t left = r->target - r->got;
	uint32_t ask = left > AL_READ_CHUNK ? AL_READ_CHUNK : (uint32_t)left;
	if (r->direct)
		ask = (ask + AL_PAGE - 1) & ~(AL_PAGE - 1);
	r->last_ask = ask;
	if (r->fd >= 0) {
		io_uring_prep_read(sqe, r->fd, al_entry_buffer(e) + r->got, ask, r->file_off + r->got);
	} else {
		io_uring_prep_read(sqe, r->slot, al_entry_buffer(e) + r->got, ask, r->file_off + r->got);
		sqe->flags |= IOSQE_FIXED_FILE;
	}
	io_uring_sqe_set_data64(sqe, ud(idx, OP_READ));
	if (lp->async_reads)
		sqe->flags |= IOSQE_ASYNC;
}

static int open_flags(const struct req *r, bool fixed_slot)
{
	/* O_NONBLOCK: should the path have become a FIFO since statx, opening
	 * it still returns at once. A direct descriptor is never inherited, and
	 * the kernel refuses O_CLOEXEC for one. */
	return O_RDONLY | O_NOCTTY | O_NONBLOCK | (fixed_slot ? 0 : O_CLOEXEC) | (r->direct ? O_DIRECT : 0);
}

/* Has a slot: open (and, unconfined, read in the same link). */
static void prep_open(struct loop *lp, uint32_t idx)
{
	struct req *r = &lp->reqs[idx];
	struct al_entry_shm *e = al_entry_at(lp->h, idx);
	if (lp->h->confined) {
		/* The kernel reads `how` when the SQE is submitted, not now. */
		memset(&r->how, 0, sizeof(r->how));
		r->how.flags = (uint64_t)open_flags(r, false);
		r->how.resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS;
		struct io_uring_sqe *sqe = get_sqe(lp);
		io_uring_prep_openat2(sqe, lp->root_fd, e->path + e->open_off, &r->how);
		io_uring_sqe_set_data64(sqe, ud(idx, OP_OPEN));
		r->cqes_left = 1;
	} else {
		ensure_sq_space(lp, 2);
		struct io_uring_sqe *sqe = get_sqe(lp);
		io_uring_prep_openat_direct(sqe, AT_FDCWD, e->path + e->open_off, open_flags(r, true), 0, (unsigned)r->slot);
		io_uring_sqe_set_data64(sqe, ud(idx, OP_OPEN));
		sqe->flags |= IOSQE_IO_LINK;
		prep_read(lp, idx, get_sqe(lp));
		r->cqes_left = 2;
	}
	r->err = 0;
	r->phase = PH_OPEN_READ;
}

static void give_slot_or_wait(struct loop *lp, uint32_t idx)
{
	struct req *r = &lp->reqs[idx];
	if (lp->free_slots.len && !lp->slot_q.len) {
		r->slot = (int32_t)fifo_pop(&lp->free_slots);
		prep_open(lp, idx);
	} else {
		r->phase = PH_WAIT_SLOT;
		fifo_push(&lp->slot_q, idx);
	}
}

static void hand_out_slots(struct loop *lp)
{
	while (lp->slot_q.len && lp->free_slots.len) {
		uint32_t idx = fifo_pop(&lp->slot_q);
		lp->reqs[idx].slot = (int32_t)fifo_pop(&lp->free_slots);
		prep_open(lp, idx);
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
	struct al_entry_shm *e = al_entry_at(lp->h, idx);
	uint64_t buf_off = (uint64_t)(al_entry_buffer(e) - (char *)lp->h);
	struct io_uring_sqe *sqe = get_sqe(lp);
	io_uring_prep_fallocate(sqe, lp->region_fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
	                        buf_off + keep, had - keep);
	io_uring_sqe_set_data64(sqe, ud(idx, OP_TRIM));
	lp->closes++;
	lp->committed[idx] = keep;
	lp->committed_total -= had - keep;
	lp->reqs[idx].trim_pending = true;
}

/* statx answered: decide what to read, or fail the request. */
static int plan_read(struct loop *lp, uint32_t idx)
{
	struct req *r = &lp->reqs[idx];
	struct al_entry_shm *e = al_entry_at(lp->h, idx);
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
	trim_entry(lp, idx, r->target);
	return 0;
}

static void finish_read(struct loop *lp, uint32_t idx)
{
	struct req *r = &lp->reqs[idx];
	uint64_t size = r->got > r->skew ? r->got - r->skew : 0;
	if (size > r->want)
		size = r->want; /* O_DIRECT rounding, or a file that grew */
	uint64_t touched = (r->got + AL_PAGE - 1) & ~(uint64_t)(AL_PAGE - 1);
	if (touched > lp->committed[idx]) {
		lp->committed_total += touched - lp->committed[idx];
		lp->committed[idx] = touched;
	}
	prep_close(lp, r);
	if (!r->size_known && size > lp->h->max_file_size)
		complete(lp, idx, -EFBIG, 0);
	else
		complete(lp, idx, 0, size);
}

/* Buffered I/O where O_DIRECT is refused (tmpfs, procfs, odd alignments). */
static void restart_buffered(struct loop *lp, uint32_t idx)
{
	struct req *r = &lp->reqs[idx];
	r->direct = false;
	if (lp->h->confined) {
		give_slot_or_wait(lp, idx);
		return;
	}
	int err = plan_read(lp, idx);
	if (err) {
		complete(lp, idx, err, 0);
		return;
	}
	give_slot_or_wait(lp, idx);
}

static void on_read(struct loop *lp, uint32_t idx, int res)
{
	struct req *r = &lp->reqs[idx];
	if (res < 0) {
		prep_close(lp, r);
		if (res == -EINVAL && r->direct)
			restart_buffered(lp, idx);
		else
			complete(lp, idx, res, 0);
		return;
	}
	r->got += (uint64_t)res;
	bool eof = res == 0 || (r->direct && (uint64_t)res < r->last_ask);
	if (eof || r->got >= r->target) {
		finish_read(lp, idx);
		return;
	}
	struct io_uring_sqe *sqe = get_sqe(lp);
	prep_read(lp, idx, sqe);
	r->phase = PH_READ;
}

static void on_statx(struct loop *lp, uint32_t idx, int res)
{
	if (res < 0) {
		complete(lp, idx, res, 0);
		return;
	}
	int err = plan_read(lp, idx);
	if (err)
		complete(lp, idx, err, 0);
	else
		give_slot_or_wait(lp, idx);
}

static void on_cqe(struct loop *lp, struct io_uring_cqe *cqe)
{
	uint64_t data = io_uring_cqe_get_data64(cqe);
	enum op op = (enum op)(data & 0xff);
	uint32_t idx = (uint32_t)(data >> 8);
	int res = cqe->res;

	if (op == OP_DOORBELL) {
		lp->doorbell_armed = false;
		return;
	}
	if (op == OP_CLOSE) {
		lp->closes--;
		release_slot(lp, (int32_t)idx);
		return;
	}
	if (op == OP_TRIM) { /* a failed trim only leaves memory committed */
		lp->closes--;
		if (idx < lp->total) {
			struct req *t = &lp->reqs[idx];
			t->trim_pending = false;
			if (t->phase == PH_AWAIT_TRIM)
				complete(lp, idx, t->done_err, t->done_size);
		}
		return;
	}
	if (idx >= lp->total)
		return;
	struct req *r = &lp->reqs[idx];

	switch (r->phase) {
	case PH_STATX:
		on_statx(lp, idx, res);
		return;
	case PH_OPEN_READ:
		if (lp->h->confined) {
			if (res < 0) {
				release_slot(lp, r->slot);
				r->slot = -1;
				if (res == -EINVAL && r->direct)
					restart_buffered(lp, idx);
				else
					complete(lp, idx, res, 0);
				return;
			}
			r->fd = res;
			struct io_uring_sqe *sqe = get_sqe(lp);
			io_uring_prep_statx(sqe, r->fd, "", AT_EMPTY_PATH | AT_STATX_SYNC_AS_STAT,
			                    STATX_TYPE | STATX_SIZE, &r->stx);
			io_uring_sqe_set_data64(sqe, ud(idx, OP_STATX));
			r->phase = PH_FSTAT;
			return;
		}
		/* unconfined: the OPEN and the linked READ each answer */
		if (op == OP_OPEN)
			r->err = res < 0 ? res : 0;
		else
			r->read_res = res;
		if (--r->cqes_left)
			return;
		if (r->err) {
			/* the open failed (the read was cancelled): the slot holds nothing */
			release_slot(lp, r->slot);
			r->slot = -1;
			if (r->err == -EINVAL && r->direct)
				restart_buffered(lp, idx);
			else
				complete(lp, idx, r->err, 0);
			return;
		}
		on_read(lp, idx, r->read_res);
		return;
	case PH_FSTAT: {
		if (res < 0) {
			prep_close(lp, r);
			complete(lp, idx, res, 0);
			return;
		}
		int err = plan_read(lp, idx);
		if (err) {
			prep_close(lp, r);
			complete(lp, idx, err, 0);
			return;
		}
		prep_read(lp, idx, get_sqe(lp));
		r->phase = PH_READ;
		return;
	}
	case PH_READ:
		on_read(lp, idx, res);
		return;
	default:
		return; /* stale CQE of a request already answered: cannot happen */
	}
}

/* ---- taking requests from the workers ---- */

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
			r->slot = -1;
			r->fd = -1;
			r->direct = h->direct;
			r->phase = PH_NEW;
			lp->in_flight++;
			pulled++;
			if (e->length != ASYNCLOAD_WHOLE_FILE && e->length > h->max_file_size)
				complete(lp, idx, -EFBIG, 0);
			else
				fifo_push(&lp->new_q, idx);
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

/*
 * The fast path for a file whose lookup the kernel can answer from its
 * caches: a synchronous openat2() with RESOLVE_CACHED (it fails with EAGAIN
 * rather than wait for the disk, like io_uring's own inline open) and fstat,
 * then straight to the read. This skips IORING_OP_STATX, which always runs
 * on an io-wq thread, and the second path walk of a later open; it roughly
 * halves the loader's CPU per cached file. The open is O_NONBLOCK|O_NOCTTY,
 * so a FIFO or terminal that lies in the way is opened without blocking and
 * refused by type before any read. Returns false to leave the request to
 * the io_uring path (not cached, no slot free, or an answer only that path
 * words canonically).
 */
static bool open_from_cache(struct loop *lp, uint32_t idx)
{
	struct req *r = &lp->reqs[idx];
	struct al_entry_shm *e = al_entry_at(lp->h, idx);
	if (!lp->free_slots.len || lp->slot_q.len)
		return false;
	struct open_how how = {
		.flags = (uint64_t)open_flags(r, false),
		.resolve = RESOLVE_CACHED,
	};
	int dfd = AT_FDCWD;
	if (lp->h->confined) {
		how.resolve |= RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS;
		dfd = lp->root_fd;
	}
	int fd = (int)syscall(SYS_openat2, dfd, e->path + e->open_off, &how, sizeof(how));
	if (fd < 0) {
		switch (errno) {
		case ENOENT: case ENOTDIR: case ELOOP: case EACCES: case EPERM:
		case ENAMETOOLONG: case EXDEV: case EISDIR:
			complete(lp, idx, -errno, 0); /* a cached answer */
			return true;
		case ENOSYS: case E2BIG:
			lp->cached_lookup = false;  /* no openat2/RESOLVE_CACHED */
			return false;
		default:
			return false;               /* EAGAIN: not cached; the rest: let io_uring say */
		}
	}
	struct stat st;
	int err = fstat(fd, &st) < 0 ? -errno : 0;
	if (!err) {
		r->stx.stx_mode = (uint16_t)st.st_mode;
		r->stx.stx_size = (uint64_t)st.st_size;
		err = plan_read(lp, idx);
	}
	if (err) {
		close(fd);
		complete(lp, idx, err, 0);
		return true;
	}
	r->fd = fd;
	r->slot = (int32_t)fifo_pop(&lp->free_slots);
	prep_read(lp, idx, get_sqe(lp));
	r->phase = PH_READ;
	return true;
}

static void dispatch_new(struct loop *lp)
{
	while (lp->new_q.len) {
		uint32_t idx = fifo_pop(&lp->new_q);
		if (lp->cached_lookup && open_from_cache(lp, idx))
			continue;
		if (lp->h->confined)
			give_slot_or_wait(lp, idx);
		else
			prep_statx_path(lp, idx);
	}
	lp->idle_polls = 0;
}

/* Not yet started when the loader stops: answered, never dropped. */
static void cancel_unstarted(struct loop *lp)
{
	while (lp->new_q.len)
		complete(lp, fifo_pop(&lp->new_q), -ESHUTDOWN, 0);
	while (lp->slot_q.len)
		complete(lp, fifo_pop(&lp->slot_q), -ESHUTDOWN, 0);
}

static void arm_doorbell(struct loop *lp, uint32_t value)
{
	if (!lp->futex_op || lp->doorbell_armed)
		return;
	struct io_uring_sqe *sqe = get_sqe(lp);
	io_uring_prep_rw(AL_IORING_OP_FUTEX_WAIT, sqe, AL_FUTEX2_SIZE_U32, (void *)&lp->bell->doorbell, 0, value);
	sqe->addr3 = AL_FUTEX_BITSET_MATCH_ANY;
	io_uring_sqe_set_data64(sqe, ud(0, OP_DOORBELL));
	lp->doorbell_armed = true;
}

static unsigned reap(struct loop *lp)
{
	struct io_uring_cqe *cqes[256];
	unsigned total = 0, n;
	while ((n = io_uring_peek_batch_cqe(&lp->ring, cqes, 256)) > 0) {
		for (unsigned i = 0; i < n; i++)
			on_cqe(lp, cqes[i]);
		io_uring_cq_advance(&lp->ring, n);
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

/* Nothing to do: sleep until a worker rings, an I/O completes, or a timeout. */
static void sleep_until_work(struct loop *lp, bool batching)
{
	struct al_header *h = lp->h;
	uint32_t bell = atomic_load(&lp->bell->doorbell);
	atomic_store(&lp->bell->sleeping, 1);
	atomic_thread_fence(memory_order_seq_cst);
	/* While stopping, only the reads in flight matter: wait for them. */
	bool stop_news = !lp->stopping && (atomic_load(&h->shutdown_requested) || al_sigterm);
	if ((!lp->stopping && !rings_empty(lp)) || stop_news) {
		atomic_store(&lp->bell->sleeping, 0);
		return;
	}
	long wait_us = batching ? AL_BATCH_POLL_US : AL_SLEEP_MS * 1000L;
	if (lp->futex_op || lp->in_flight || lp->closes) {
		arm_doorbell(lp, bell);
		if (!lp->futex_op && wait_us > 1000)
			wait_us = 1000; /* no futex op: look at the rings now and then */
		struct __kernel_timespec ts = {.tv_sec = wait_us / 1000000, .tv_nsec = (wait_us % 1000000) * 1000};
		struct io_uring_cqe *cqe;
		io_uring_submit_and_wait_timeout(&lp->ring, &cqe, 1, &ts, NULL);
		lp->pending_sqes = 0;
	} else {
		al_futex_wait(&lp->bell->doorbell, bell, (int)(wait_us / 1000) ? (int)(wait_us / 1000) : 1);
	}
	atomic_store(&lp->bell->sleeping, 0);
}

static int loop_init(struct loop *lp, asyncload_loader *l, int region_fd, uint32_t tid)
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

	struct rlimit rl;
	uint32_t nofile = 1024;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
		nofile = rl.rlim_cur > UINT32_MAX ? UINT32_MAX : (uint32_t)rl.rlim_cur;
	/* Confined loads hold real descriptors: leave room for the rest. */
	uint32_t cap = (h->confined ? (nofile > 64 ? nofile - 32 : nofile / 2) : nofile) / h->n_threads;
	lp->n_slots = mine < AL_MAX_SLOTS ? mine : AL_MAX_SLOTS;
	if (lp->n_slots > cap)
		lp->n_slots = cap;
	if (lp->n_slots == 0)
		return -EMFILE;

	lp->reqs = calloc(lp->total, sizeof(*lp->reqs));
	lp->touched = calloc(h->n_workers, sizeof(uint32_t));
	lp->touched_mark = calloc(h->n_workers, 1);
	lp->committed = calloc(lp->total, sizeof(uint64_t));
	if (!lp->committed ||
	    !lp->reqs || !lp->touched || !lp->touched_mark || !fifo_init(&lp->new_q, lp->total) ||
	    !fifo_init(&lp->slot_q, lp->total) || !fifo_init(&lp->free_slots, lp->n_slots))
		return -ENOMEM;
	for (uint32_t s = 0; s < lp->n_slots; s++)
		fifo_push(&lp->free_slots, s);

	if (h->confined) {
		lp->root_fd = open(h->root, O_PATH | O_DIRECTORY | O_CLOEXEC);
		if (lp->root_fd < 0)
			return -errno;
	}

	uint32_t sq = mine * 2 + 8;
	if (sq > 4096)
		sq = 4096;
	uint32_t cq = mine * 2 + lp->n_slots * 2 + 16;
	struct io_uring_params p;
	static const unsigned flag_sets[] = {
		IORING_SETUP_SUBMIT_ALL | IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN,
		IORING_SETUP_SUBMIT_ALL | IORING_SETUP_COOP_TASKRUN,
		0,
	};
	int r = -EINVAL;
	for (size_t i = 0; i < sizeof(flag_sets) / sizeof(flag_sets[0]); i++) {
		memset(&p, 0, sizeof(p));
		p.flags = flag_sets[i] | IORING_SETUP_CQSIZE | IORING_SETUP_CLAMP;
		p.cq_entries = cq;
		r = io_uring_queue_init_params(sq, &lp->ring, &p);
		if (r != -EINVAL)
			break;
	}
	if (r < 0)
		return r;
	if (!h->confined) {
		r = io_uring_register_files_sparse(&lp->ring, lp->n_slots);
		if (r < 0) {
			io_uring_queue_exit(&lp->ring);
			return r;
		}
	}
	/* statx and open block in io-wq threads on a cold cache; the default
	 * bound (4 per CPU) would cap how many files are looked up at once. */
	unsigned iowq[2] = {lp->n_slots < AL_MAX_IOWQ ? lp->n_slots : AL_MAX_IOWQ, 0};
	io_uring_register_iowq_max_workers(&lp->ring, iowq);
	struct io_uring_probe *probe = io_uring_get_probe_ring(&lp->ring);
	if (probe) {
		lp->futex_op = io_uring_opcode_supported(probe, AL_IORING_OP_FUTEX_WAIT);
		io_uring_free_probe(probe);
	}
	lp->async_reads = getenv("ASYNCLOAD_ASYNC_READS") != NULL;
	lp->cached_lookup = getenv("ASYNCLOAD_NO_CACHED_LOOKUP") == NULL;
	if (getenv("ASYNCLOAD_NO_FUTEX_OP")) /* lets the tests cover the fallback */
		lp->futex_op = false;
	return 0;
}

static void loop_free(struct loop *lp)
{
	free(lp->reqs);
	free(lp->touched);
	free(lp->touched_mark);
	free(lp->committed);
	free(lp->new_q.v);
	free(lp->slot_q.v);
	free(lp->free_slots.v);
	if (lp->root_fd >= 0)
		close(lp->root_fd);
}

static void run_loop(struct loop *lp)
{
	struct al_header *h = lp->h;
	for (;;) {
		if (!lp->stopping &&
		    (atomic_load(&h->shutdown_requested) || al_sigterm || parent_gone(lp))) {
			lp->stopping = true;
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
		hand_out_slots(lp);
		if (lp->pending_sqes) {
			io_uring_submit(&lp->ring);
			lp->pending_sqes = 0;
		}
		unsigned reaped = reap(lp);
		hand_out_slots(lp);
		wake_touched(lp);
		if (lp->stopping && !lp->in_flight && !lp->closes)
			break;
		if (pulled || reaped || lp->pending_sqes)
			continue;
		bool batching = lp->new_q.len > 0;
		sleep_until_work(lp, batching);
		if (batching && rings_empty(lp))
			lp->idle_polls++;
		reap(lp);
		hand_out_slots(lp);
		wake_touched(lp);
	}
}

/* The loader's own description of the region, so its flock() is its own. */
static int take_loader_lock(asyncload_loader *l)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/self/fd/%d", l->fd);
	int fd = open(path, O_RDWR | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
		int err = errno == EWOULDBLOCK ? -EBUSY : -errno;
		close(fd);
		return err;
	}
	return fd;
}

/* The threads of one loader start together: all rings set up, or none runs. */
struct start_gate {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	uint32_t ready;
	bool go, failed;
	int error;
};

struct loader_thread {
	asyncload_loader *l;
	struct start_gate *gate;
	int region_fd;
	pid_t parent;
	uint32_t tid;
	bool started;
	pthread_t thread;
	struct loop lp;
};

/* Sets the thread's ring up (io_uring wants its single issuer to be the
 * thread that created it), waits for the others, serves until shutdown. */
static void *loader_thread_main(void *arg)
{
	struct loader_thread *t = arg;
	struct start_gate *g = t->gate;
	int r = loop_init(&t->lp, t->l, t->region_fd, t->tid);
	pthread_mutex_lock(&g->lock);
	if (r < 0 && !g->failed) {
		g->failed = true;
		g->error = r;
	}
	g->ready++;
	pthread_cond_broadcast(&g->cond);
	while (!g->go)
		pthread_cond_wait(&g->cond, &g->lock);
	bool run = !g->failed;
	pthread_mutex_unlock(&g->lock);
	if (r >= 0) {
		t->lp.parent = t->parent;
		if (run)
			run_loop(&t->lp);
		io_uring_queue_exit(&t->lp.ring);
	}
	loop_free(&t->lp);
	return NULL;
}

static int loader_run(asyncload_loader *l, pid_t parent)
{
	struct al_header *h = l->hdr;
	uint32_t state = atomic_load(&h->state);
	if (state != AL_STATE_NEW)
		return al_state_final(state) ? -ESHUTDOWN : -EBUSY;

	int lock_fd = take_loader_lock(l);
	int r = lock_fd;
	uint32_t n = h->n_threads ? h->n_threads : 1;
	struct loader_thread *ts = NULL;
	struct start_gate gate = {.lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER};
	if (r >= 0) {
		ts = calloc(n, sizeof(*ts));
		r = ts ? 0 : -ENOMEM;
	}
	if (r >= 0) {
		for (uint32_t i = 0; i < n; i++) {
			ts[i] = (struct loader_thread){.l = l, .gate = &gate, .region_fd = lock_fd,
			                               .parent = parent, .tid = i};
		}
		/* thread 0 is the calling thread */
		for (uint32_t i = 1; i < n; i++) {
			int e = pthread_create(&ts[i].thread, NULL, loader_thread_main, &ts[i]);
			if (e) {
				pthread_mutex_lock(&gate.lock);
				gate.failed = true;
				gate.error = -e;
				gate.ready++;
				pthread_mutex_unlock(&gate.lock);
			} else {
				ts[i].started = true;
			}
		}
		int r0 = loop_init(&ts[0].lp, l, lock_fd, 0);
		pthread_mutex_lock(&gate.lock);
		if (r0 < 0 && !gate.failed) {
			gate.failed = true;
			gate.error = r0;
		}
		gate.ready++;
		while (gate.ready < n)
			pthread_cond_wait(&gate.cond, &gate.lock);
		r = gate.failed ? gate.error : 0;
		if (!gate.failed) {
			atomic_store(&h->loader_pid, getpid());
			atomic_store(&h->loader_fd, lock_fd);
			uint32_t expected = AL_STATE_NEW;
			/* a shutdown before we started is seen by every thread's loop */
			atomic_compare_exchange_strong(&h->state, &expected, AL_STATE_RUNNING);
			al_futex_wake(&h->state, INT_MAX);
		}
		gate.go = true;
		pthread_cond_broadcast(&gate.cond);
		pthread_mutex_unlock(&gate.lock);
		if (r0 >= 0) {
			ts[0].lp.parent = parent;
			if (!gate.failed)
				run_loop(&ts[0].lp);
			io_uring_queue_exit(&ts[0].lp.ring);
		}
		loop_free(&ts[0].lp);
		for (uint32_t i = 1; i < n; i++)
			if (ts[i].started)
				pthread_join(ts[i].thread, NULL);
	}
	free(ts);
	if (r < 0) {
		atomic_store(&h->start_error, r);
		uint32_t expected = AL_STATE_NEW;
		if (atomic_compare_exchange_strong(&h->state, &expected, AL_STATE_FAILED))
			al_wake_all_workers(h);
		al_futex_wake(&h->state, INT_MAX);
		if (lock_fd >= 0)
			close(lock_fd);
		return r;
	}
	atomic_store(&h->state, AL_STATE_STOPPED);
	al_wake_all_workers(h);
	al_futex_wake(&h->state, INT_MAX);
	close(lock_fd);
	return 0;
}

ASYNCLOAD_EXPORT int asyncload_loader_run(asyncload_loader *l)
{
	if (!l)
		return -EINVAL;
	return loader_run(l, 0);
}

static void on_sigterm(int sig)
{
	(void)sig;
	al_sigterm = 1;
}

ASYNCLOAD_EXPORT int asyncload_loader_spawn(asyncload_loader *l, pid_t *pid)
{
	if (!l)
		return -EINVAL;
	struct al_header *h = l->hdr;
	uint32_t state = atomic_load(&h->state);
	if (state != AL_STATE_NEW)
		return al_state_final(state) ? -ESHUTDOWN : -EBUSY;
	if (l->spawned > 0)
		return -EBUSY;

	pid_t parent = getpid();
	pid_t child = fork();
	if (child < 0)
		return -errno;
	if (child == 0) {
		/* Only our own descriptors: the loader must not keep the
		 * parent's pipes or sockets open. */
		int keep = l->fd;
		if (keep > 3)
			close_range(3, (unsigned)keep - 1, 0);
		close_range((unsigned)keep + 1, ~0u, 0);
		sigset_t all;
		sigemptyset(&all);
		sigprocmask(SIG_SETMASK, &all, NULL);
		/* Ctrl-C reaches the whole process group; the creator decides. */
		signal(SIGINT, SIG_IGN);
		signal(SIGPIPE, SIG_IGN);
		struct sigaction sa;
		memset(&sa, 0, sizeof(sa));
		sa.sa_handler = on_sigterm;
		sigaction(SIGTERM, &sa, NULL);
		sigaction(SIGHUP, &sa, NULL);
		struct rlimit rl;
		if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
			rl.rlim_cur = rl.rlim_max > 1u << 20 ? 1u << 20 : rl.rlim_max;
			setrlimit(RLIMIT_NOFILE, &rl);
		}
		if (getppid() != parent)
			_exit(0);
		int r = loader_run(l, parent);
		_exit(r < 0 ? 1 : 0);
	}

	l->spawned = child;
	l->spawner = parent;
	/* Return once the child serves requests or has failed to start. */
	for (;;) {
		state = atomic_load(&h->state);
		if (state != AL_STATE_NEW)
			break;
		int status;
		pid_t w = waitpid(child, &status, WNOHANG);
		if (w == child) {
			l->spawned = 0;
			int err = atomic_load(&h->start_error);
			return err < 0 ? err : -ECHILD;
		}
		al_futex_wait(&h->state, AL_STATE_NEW, 20);
	}
	if (state == AL_STATE_FAILED) {
		int err = atomic_load(&h->start_error);
		al_reap_child(child);
		l->spawned = 0;
		return err < 0 ? err : -ECHILD;
	}
	if (pid)
		*pid = child;
	return 0;
}
