/* SPDX-License-Identifier: MIT */
/*
 * engine.h - the executor interface: how a loader thread's file operations
 * are carried out. An engine takes operations (open, statx, read, close, punch
 * a hole) tagged with a request index, runs them without the caller waiting
 * on storage, and hands back completions. It knows nothing of requests or
 * their steps: steps.c decides what happens next; loop.c owns the loop.
 *
 *   engine_uring.c    io_uring: each op an SQE, completions from the CQ ring
 *   engine_threads.c  a pool of I/O threads doing the same calls, for hosts
 *                     where io_uring is forbidden (containers, sysctl)
 */
#ifndef ASYNCLOAD_ENGINE_H
#define ASYNCLOAD_ENGINE_H

#include <linux/openat2.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

#include "internal.h"

enum al_op_kind {
	AL_OP_STATX = 1,  /* statx(dirfd, path) or, with path "", of fd */
	AL_OP_OPEN = 2,   /* openat2(dirfd, path, how) into slot or a real fd */
	AL_OP_READ = 3,   /* pread(fd or slot, buf, len, off) */
	AL_OP_CLOSE = 4,  /* close(fd or slot); idx is the slot */
	AL_OP_TRIM = 5,   /* fallocate(PUNCH_HOLE) of the region; idx an entry */
};

/* Op flags. */
#define AL_OPF_LINK    0x1u /* the next op runs only if this one succeeds
                             * (else it completes with -ECANCELED) */
#define AL_OPF_REAL_FD 0x2u /* OPEN: the caller needs a real descriptor */
#define AL_OPF_ASYNC   0x4u /* may block on storage: never run inline */

struct al_op {
	uint8_t kind;
	uint8_t flags;
	uint32_t idx;             /* comes back in the completion */
	int dirfd;                /* STATX, OPEN */
	const char *path;         /* STATX, OPEN; must live until completion */
	const struct open_how *how; /* OPEN; must live until completion */
	struct statx *stx;        /* STATX: filled in */
	int fd;                   /* READ, CLOSE, STATX of a file: a real
	                           * descriptor, or -1 to use slot */
	int32_t slot;             /* OPEN, READ, CLOSE: the open-file slot */
	void *buf;                /* READ */
	uint64_t len, off;        /* READ, TRIM */
};

struct al_completion {
	uint32_t idx;
	uint8_t kind;
	int32_t res;  /* -errno, or: OPEN 0; READ bytes; others 0 */
	int32_t fd;   /* OPEN: the real descriptor, or -1 (the file is in the slot) */
};

struct al_engine_config {
	uint32_t n_slots;       /* open-file slots (files open at once) */
	uint32_t max_ops;       /* ops in flight at most (sizes queues) */
	uint32_t iowq_workers;  /* blocking ops run at once (io-wq or threads) */
	int region_fd;          /* TRIM target */
	struct al_bell *bell;   /* the loop's doorbell: rung by completions that
	                         * do not come through a ring */
};

struct al_engine;

struct al_engine_ops {
	const char *name;
	int  (*init)(struct al_engine *e, const struct al_engine_config *cfg);
	void (*submit)(struct al_engine *e, const struct al_op *op);
	void (*flush)(struct al_engine *e);
	unsigned (*reap)(struct al_engine *e, struct al_completion *out, unsigned max);
	/* Sleeps until a completion, a change of *doorbell from `seen`, or
	 * timeout_us. `busy`: ops are in flight. */
	void (*wait)(struct al_engine *e, _Atomic uint32_t *doorbell, uint32_t seen, long timeout_us, bool busy);
	/* Tears down. `abandoned`: ops are still out (a stalled filesystem):
	 * do not wait for them; what they return later is closed and dropped. */
	void (*exit)(struct al_engine *e, bool abandoned);
};

struct al_engine {
	const struct al_engine_ops *ops;
	void *priv;
	bool fixed_slots;     /* OPEN without AL_OPF_REAL_FD keeps the file in its slot */
};

extern const struct al_engine_ops al_engine_uring;
extern const struct al_engine_ops al_engine_threads;

/* True if this process may set up an io_uring with every op the loader
 * uses; else false and why[] says why, in words. */
bool al_uring_usable(char *why, size_t len);

#endif /* ASYNCLOAD_ENGINE_H */
