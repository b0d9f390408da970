/* SPDX-License-Identifier: MIT */
/*
 * loop.h - one loader thread's state, shared by loop.c (taking requests,
 * answering workers, sleeping) and steps.c (what happens next to a request).
 * Not installed.
 */
#ifndef ASYNCLOAD_LOOP_H
#define ASYNCLOAD_LOOP_H

#include <linux/openat2.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "cache.h"
#include "engine.h"
#include "internal.h"
#include "mounts.h"

enum phase {
	PH_IDLE = 0,
	PH_NEW,         /* pulled from a ring, waiting for dispatch */
	PH_STATX,       /* path statx in flight (unconfined) */
	PH_WAIT_SLOT,   /* waiting for an open-file slot */
	PH_OPEN_READ,   /* open + first read in flight (unconfined), or open (confined) */
	PH_FSTAT,       /* statx on the open fd in flight (confined) */
	PH_READ,        /* a further read in flight */
	PH_AWAIT_TRIM,  /* answered, held back until its entry's trim is done */
};

struct req {
	uint8_t phase;
	uint8_t cqes_left;
	bool direct;
	bool size_known;
	bool remote;       /* on a filesystem that may block: every op async */
	bool trim_pending; /* a hole is being punched in this entry's buffer */
	int32_t err;       /* the open's error, of an open+read pair */
	int32_t read_res;  /* the read's result, of an open+read pair */
	int32_t slot;      /* open-file slot, -1 if none */
	int32_t fd;        /* a real descriptor, else -1 (the file is in the slot) */
	uint32_t skew;     /* O_DIRECT: data starts this far into the buffer */
	uint64_t want;     /* bytes the entry should hold at most */
	uint64_t file_off; /* where reading starts */
	uint64_t target;   /* bytes to read from file_off */
	uint64_t got;
	uint64_t last_ask;
	uint64_t cache_res;  /* region offset of its cache reservation, 0 if none */
	uint64_t cache_len;
	int32_t done_err;  /* the answer, while PH_AWAIT_TRIM */
	uint64_t done_size;
	struct statx stx;
	struct open_how how;
};

#define AL_READ_CHUNK (1u << 30) /* a read(2) moves at most ~2 GiB; stay below */

struct fifo {
	uint32_t *v;
	uint32_t cap, head, len;
};

struct loop {
	asyncload_loader *l;
	struct al_header *h;
	struct al_engine eng;
	struct al_mounts *mounts; /* which filesystems may block */
	bool root_may_block;      /* confined, and root reaches such a mount */
	struct al_cache *cache;   /* the loader's, shared by its threads; NULL: none */
	struct req *reqs;
	uint32_t total;
	struct fifo new_q, slot_q, free_slots;
	uint32_t n_slots;
	uint32_t in_flight;     /* requests not yet completed */
	uint32_t ops;           /* engine ops not yet reaped */
	uint32_t closes;        /* CLOSE and TRIM ops not yet reaped */
	uint64_t *committed;    /* per entry: bytes of its buffer that may hold pages */
	uint64_t committed_total; /* their sum over this thread's entries */
	int region_fd;          /* the loader's own descriptor of the region */
	uint32_t idle_polls;
	bool cached_lookup;     /* the inline openat2(RESOLVE_CACHED) works here */
	bool async_reads;       /* ASYNCLOAD_ASYNC_READS: reads forced off the loop */
	bool inline_reads;      /* cached files read inline (RWF_NOWAIT); ASYNCLOAD_NO_INLINE_READ=1 turns off */
	bool stopping;
	bool abandoned;         /* stopped with ops still out (stalled storage) */
	uint64_t stop_deadline; /* stopping: answer what is still out by then */
	int root_fd;
	pid_t parent;           /* spawned: exit when it is gone */
	uint32_t tid;           /* this thread serves workers tid, tid + n_threads, ... */
	struct al_bell *bell;
	uint64_t next_parent_check;
	uint32_t *touched;      /* workers with new completions to wake */
	uint32_t n_touched;
	uint8_t *touched_mark;
};

bool al_fifo_init(struct fifo *f, uint32_t cap);
void al_fifo_push(struct fifo *f, uint32_t x);
uint32_t al_fifo_pop(struct fifo *f);

/* loop.c: answers request idx to its worker (err 0: size bytes loaded). */
void al_loop_complete(struct loop *lp, uint32_t idx, int err, uint64_t size);
/* loop.c: hands an op to the engine, counting it. */
void al_loop_submit(struct loop *lp, const struct al_op *op);

/* loop.c: the loop of loader thread tid; al_loop_free after a failed init too. */
int  al_loop_init(struct loop *lp, asyncload_loader *l, const struct al_engine_ops *engine, int region_fd,
                  uint32_t tid);
void al_loop_run(struct loop *lp);
void al_loop_free(struct loop *lp);
/* loader.c: SIGTERM or SIGHUP reached a spawned loader. */
bool al_loop_stop_signalled(void);

/* steps.c, for inline.c: the request's path as opened, where its bytes go,
 * queue its next read, open flags, plan the read from stx (0 or -errno),
 * answer a finished read. */
const char *al_step_open_path(struct loop *lp, uint32_t idx);
char *al_step_buffer(struct loop *lp, uint32_t idx);
void al_step_read_next(struct loop *lp, uint32_t idx, uint8_t extra_flags);
uint64_t al_step_open_flags(const struct req *r, bool real_fd);
int  al_step_plan_read(struct loop *lp, uint32_t idx);
void al_step_answer_read(struct loop *lp, uint32_t idx);

/* inline.c: true once the request is answered or handed on */
bool al_inline_from_cache(struct loop *lp, uint32_t idx);
bool al_inline_open(struct loop *lp, uint32_t idx, const struct al_place *place);

/* steps.c */
void al_steps_start(struct loop *lp, uint32_t idx);             /* a new request */
void al_steps_on_completion(struct loop *lp, const struct al_completion *c);
void al_steps_hand_out_slots(struct loop *lp);

#endif /* ASYNCLOAD_LOOP_H */
