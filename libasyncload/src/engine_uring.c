/* SPDX-License-Identifier: MIT */
/*
 * engine_uring.c - the io_uring engine: ring setup and feature probing, each
 * op one SQE (an open and its first read linked), completions from the CQ
 * ring, and sleeping in the ring: on kernels with IORING_OP_FUTEX_WAIT (6.7+)
 * a futex wait on the loader thread's doorbell sits in the ring beside the
 * I/O, so one io_uring_enter() waits for both; elsewhere it falls back to
 * futex() when nothing is in flight and to a short CQE wait otherwise.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine.h"
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

#define UD_DOORBELL 0xffu
#define UD_REAL_FD 0x80u   /* an OPEN that made a real descriptor */
#define AL_MAX_SQ 4096u

struct uring {
	struct io_uring ring;
	unsigned pending;     /* SQEs not yet submitted */
	bool futex_op;
	bool doorbell_armed;
};

static uint64_t ud(uint32_t idx, unsigned kind)
{
	return ((uint64_t)idx << 8) | kind;
}

static void submit_now(struct uring *u)
{
	if (u->pending) {
		io_uring_submit(&u->ring);
		u->pending = 0;
	}
}

static struct io_uring_sqe *get_sqe(struct uring *u)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&u->ring);
	if (!sqe) {
		io_uring_submit(&u->ring);
		u->pending = 0;
		sqe = io_uring_get_sqe(&u->ring);
	}
	if (sqe)
		u->pending++;
	return sqe;
}

static int uring_init(struct al_engine *e, const struct al_engine_config *cfg)
{
	struct uring *u = calloc(1, sizeof(*u));
	if (!u)
		return -ENOMEM;
	uint32_t sq = cfg->max_ops < AL_MAX_SQ ? cfg->max_ops : AL_MAX_SQ;
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
		p.cq_entries = cfg->max_ops * 2;
		r = io_uring_queue_init_params(sq, &u->ring, &p);
		if (r != -EINVAL)
			break;
	}
	if (r < 0) {
		free(u);
		return r;
	}
	e->fixed_slots = io_uring_register_files_sparse(&u->ring, cfg->n_slots) == 0;
	/* Opens, statx and reads on a cold cache or a network filesystem block
	 * in io-wq threads; the default bound (4 per CPU) would cap how many
	 * run at once. */
	unsigned iowq[2] = {cfg->iowq_workers, cfg->iowq_workers};
	io_uring_register_iowq_max_workers(&u->ring, iowq);
	struct io_uring_probe *probe = io_uring_get_probe_ring(&u->ring);
	if (probe) {
		u->futex_op = io_uring_opcode_supported(probe, AL_IORING_OP_FUTEX_WAIT);
		io_uring_free_probe(probe);
	}
	if (getenv("ASYNCLOAD_NO_FUTEX_OP")) /* lets the tests cover the fallback */
		u->futex_op = false;
	e->priv = u;
	return 0;
}

static void uring_submit(struct al_engine *e, const struct al_op *op)
{
	struct uring *u = e->priv;
	/* A link's two SQEs must go to the kernel in one submission. */
	if ((op->flags & AL_OPF_LINK) && io_uring_sq_space_left(&u->ring) < 2)
		submit_now(u);
	struct io_uring_sqe *sqe = get_sqe(u);
	unsigned kind = op->kind;
	bool fixed = false;
	switch (op->kind) {
	case AL_OP_STATX:
		if (op->fd >= 0)
			io_uring_prep_statx(sqe, op->fd, "", AT_EMPTY_PATH | AT_STATX_SYNC_AS_STAT,
			                    STATX_TYPE | STATX_SIZE, op->stx);
		else
			io_uring_prep_statx(sqe, op->dirfd, op->path, AT_STATX_SYNC_AS_STAT, STATX_TYPE | STATX_SIZE,
			                    op->stx);
		break;
	case AL_OP_OPEN:
		if ((op->flags & AL_OPF_REAL_FD) || !e->fixed_slots) {
			io_uring_prep_openat2(sqe, op->dirfd, op->path, (struct open_how *)op->how);
			kind |= UD_REAL_FD;
		} else {
			io_uring_prep_openat_direct(sqe, op->dirfd, op->path, (int)op->how->flags, 0,
			                            (unsigned)op->slot);
		}
		break;
	case AL_OP_READ:
		fixed = op->fd < 0;
		io_uring_prep_read(sqe, fixed ? op->slot : op->fd, op->buf, (unsigned)op->len, op->off);
		break;
	case AL_OP_CLOSE:
		if (op->fd >= 0)
			io_uring_prep_close(sqe, op->fd);
		else
			io_uring_prep_close_direct(sqe, (unsigned)op->slot);
		break;
	case AL_OP_TRIM:
		io_uring_prep_fallocate(sqe, op->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, op->off, op->len);
		break;
	}
	if (fixed)
		sqe->flags |= IOSQE_FIXED_FILE;
	if (op->flags & AL_OPF_LINK)
		sqe->flags |= IOSQE_IO_LINK;
	if (op->flags & AL_OPF_ASYNC)
		sqe->flags |= IOSQE_ASYNC;
	io_uring_sqe_set_data64(sqe, ud(op->idx, kind));
}

static void uring_flush(struct al_engine *e)
{
	submit_now(e->priv);
}

static unsigned uring_reap(struct al_engine *e, struct al_completion *out, unsigned max)
{
	struct uring *u = e->priv;
	struct io_uring_cqe *cqes[256];
	unsigned n = 0;
	while (n == 0) {
		unsigned want = max < 256 ? max : 256;
		unsigned got = io_uring_peek_batch_cqe(&u->ring, cqes, want);
		if (!got)
			break;
		for (unsigned i = 0; i < got; i++) {
			uint64_t data = io_uring_cqe_get_data64(cqes[i]);
			unsigned kind = (unsigned)(data & 0xff);
			if (kind == UD_DOORBELL) {
				u->doorbell_armed = false;
				continue;
			}
			struct al_completion *c = &out[n++];
			c->idx = (uint32_t)(data >> 8);
			c->kind = (uint8_t)(kind & ~UD_REAL_FD);
			c->res = cqes[i]->res;
			c->fd = -1;
			if ((kind & UD_REAL_FD) && c->res >= 0) {
				c->fd = c->res;
				c->res = 0;
			}
		}
		io_uring_cq_advance(&u->ring, got);
	}
	return n;
}

static void arm_doorbell(struct uring *u, _Atomic uint32_t *doorbell, uint32_t seen)
{
	if (u->doorbell_armed)
		return;
	struct io_uring_sqe *sqe = get_sqe(u);
	io_uring_prep_rw(AL_IORING_OP_FUTEX_WAIT, sqe, AL_FUTEX2_SIZE_U32, (void *)doorbell, 0, seen);
	sqe->addr3 = AL_FUTEX_BITSET_MATCH_ANY;
	io_uring_sqe_set_data64(sqe, ud(0, UD_DOORBELL));
	u->doorbell_armed = true;
}

static void uring_wait(struct al_engine *e, _Atomic uint32_t *doorbell, uint32_t seen, long timeout_us, bool busy)
{
	struct uring *u = e->priv;
	if (!u->futex_op && !busy) {
		al_futex_wait(doorbell, seen, timeout_us / 1000 ? (int)(timeout_us / 1000) : 1);
		return;
	}
	if (u->futex_op)
		arm_doorbell(u, doorbell, seen);
	else if (timeout_us > 1000)
		timeout_us = 1000; /* no futex op: look at the rings now and then */
	struct __kernel_timespec ts = {.tv_sec = timeout_us / 1000000, .tv_nsec = (timeout_us % 1000000) * 1000};
	struct io_uring_cqe *cqe;
	io_uring_submit_and_wait_timeout(&u->ring, &cqe, 1, &ts, NULL);
	u->pending = 0;
}

/* The kernel cancels what is still out when the ring goes; an op stuck in a
 * filesystem ends when the process is killed (the spawner does, after 5 s). */
static void uring_exit(struct al_engine *e, bool abandoned)
{
	(void)abandoned;
	struct uring *u = e->priv;
	if (!u)
		return;
	io_uring_queue_exit(&u->ring);
	free(u);
	e->priv = NULL;
}

/* kernel.io_uring_disabled: 0 allowed, 1 only for a group, 2 nobody; -1 absent. */
static int uring_sysctl(void)
{
	FILE *f = fopen("/proc/sys/kernel/io_uring_disabled", "re");
	int v = -1;
	if (f) {
		if (fscanf(f, "%d", &v) != 1)
			v = -1;
		fclose(f);
	}
	return v;
}

bool al_uring_usable(char *why, size_t len)
{
	struct io_uring ring;
	int r = io_uring_queue_init(4, &ring, 0);
	if (r < 0) {
		int sysctl = uring_sysctl();
		if (sysctl > 0)
			snprintf(why, len, "auto: io_uring_setup failed (%s): kernel.io_uring_disabled=%d; using threads",
			         strerror(-r), sysctl);
		else if (r == -EPERM)
			snprintf(why, len, "auto: io_uring_setup refused (%s), likely a seccomp profile "
			         "(Docker 25+, containerd 2.0); using threads", strerror(-r));
		else
			snprintf(why, len, "auto: io_uring_setup failed (%s); using threads", strerror(-r));
		return false;
	}
	static const struct { int op; const char *name; } needed[] = {
		{IORING_OP_STATX, "STATX"}, {IORING_OP_OPENAT2, "OPENAT2"}, {IORING_OP_OPENAT, "OPENAT"},
		{IORING_OP_READ, "READ"}, {IORING_OP_CLOSE, "CLOSE"}, {IORING_OP_FALLOCATE, "FALLOCATE"},
	};
	bool ok = true;
	struct io_uring_probe *probe = io_uring_get_probe_ring(&ring);
	for (size_t i = 0; ok && i < sizeof(needed) / sizeof(needed[0]); i++) {
		if (!probe || !io_uring_opcode_supported(probe, needed[i].op)) {
			snprintf(why, len, "auto: this kernel's io_uring lacks IORING_OP_%s; using threads", needed[i].name);
			ok = false;
		}
	}
	if (probe)
		io_uring_free_probe(probe);
	io_uring_queue_exit(&ring);
	return ok;
}

const struct al_engine_ops al_engine_uring = {
	.name = "io_uring",
	.init = uring_init,
	.submit = uring_submit,
	.flush = uring_flush,
	.reap = uring_reap,
	.wait = uring_wait,
	.exit = uring_exit,
};
