/* SPDX-License-Identifier: MIT */
/*
 * internal.h - the shared-memory layout and helpers used by every part of
 * libasyncload. Not installed.
 *
 * One region (an unnamed memfd) per loader:
 *
 *   [al_header][al_worker_shm x n_workers][al_entry_shm x n_entries][data buffers][cache]
 *
 * Each worker owns queue_depth entries and two single-producer/single-consumer
 * rings of entry indices: requests (worker -> loader) and completions
 * (loader -> worker). Nothing on the hot path takes a lock that is shared
 * between processes: a process killed while holding one would stall everyone.
 * Sleeping is done with futexes on ring words; the loader's liveness is an
 * flock() that the kernel drops when the loader dies.
 */
#ifndef ASYNCLOAD_INTERNAL_H
#define ASYNCLOAD_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/types.h>

#include "asyncload.h"

#define ASYNCLOAD_EXPORT __attribute__((visibility("default")))

#define AL_MAGIC    0x64616f6c636e7961ull /* "asyncload" */
#define AL_VERSION  3u
#define AL_CACHELINE 64u
#define AL_PAGE     4096u

/* Loader life cycle, in hdr->state. Only moves forward. */
enum al_state {
	AL_STATE_NEW = 0,      /* no loader yet: requests queue up */
	AL_STATE_RUNNING = 1,
	AL_STATE_STOPPING = 2, /* finishing what is being read; new requests refused */
	AL_STATE_STOPPED = 3,  /* final: loader gone cleanly */
	AL_STATE_DEAD = 4,     /* final: loader died (noticed by a worker) */
	AL_STATE_FAILED = 5,   /* final: loader could not start, see start_error */
};

/* Entry ownership, in al_entry_shm.state. */
enum al_entry_state {
	AL_ENTRY_FREE = 0,
	AL_ENTRY_QUEUED = 1,   /* the worker's: being filled, or published in the request ring */
	AL_ENTRY_HELD = 2,     /* returned to the worker, not yet released */
	AL_ENTRY_LOADING = 3,  /* the loader took it from the ring; set before req_head moves past it */
};

/*
 * Who has an entry, as a new holder of the slot sees it (docs/design.md,
 * "Crash points"): LOADING, or QUEUED and found between req_head and
 * req_tail, belongs to the loader; QUEUED anywhere else was never published
 * (its holder died while filling it) and is free at once. The loader marks
 * LOADING before its release store of req_head, so reading req_head
 * (acquire) first makes every entry behind it look LOADING, and an entry it
 * is taking right now is still between req_head and req_tail.
 */

/*
 * Test builds only (meson builds a separate copy of the sources with
 * ASYNCLOAD_FAULT_POINTS for tests/c/crashpoints.c): AL_FAULT("name") ends
 * the process with _exit(AL_FAULT_EXIT) when the environment variable
 * ASYNCLOAD_FAULT equals "name", so a test can stop a worker between two
 * steps of the protocol without depending on timing. "stop:name" instead
 * stops the process there (SIGSTOP, the first time only) until the test
 * sends SIGCONT: a window held open (tests/c/sleep_check.c). The installed library
 * and the Python extension are built without it.
 */
#define AL_FAULT_EXIT 86
#ifdef ASYNCLOAD_FAULT_POINTS
void al_fault_point(const char *name);
#define AL_FAULT(name) al_fault_point(name)
#else
#define AL_FAULT(name) ((void)0)
#endif

#define AL_MAX_THREADS 16u

/* One per loader thread. Workers ring the doorbell (a futex word) only while
 * that thread sleeps. */
struct al_bell {
	_Alignas(AL_CACHELINE) _Atomic uint32_t sleeping;
	_Atomic uint32_t doorbell;
};

struct al_header {
	uint64_t magic;
	uint32_t version;
	uint32_t header_size;
	uint64_t token;          /* random; checked on attach against pid reuse */
	uint64_t region_size;

	uint32_t queue_depth;
	uint32_t n_workers;
	uint64_t max_file_size;
	uint32_t dispatch_n;
	uint32_t idle_iters;
	uint32_t direct;
	uint32_t ring_size;      /* power of two >= queue_depth */

	uint64_t workers_off;
	uint64_t worker_stride;
	uint64_t entries_off;
	uint64_t entry_stride;
	uint64_t data_off;
	uint64_t data_stride;
	uint64_t cache_off;      /* the cache area (cache.c), cache_bytes long */
	uint64_t cache_bytes;

	int32_t creator_pid, creator_fd;
	uint32_t confined;       /* loads resolve beneath root[] (openat2) */
	uint32_t root_len;
	char root[ASYNCLOAD_PATH_MAX];

	_Alignas(AL_CACHELINE) _Atomic uint32_t state;
	_Atomic int32_t start_error;
	_Atomic int32_t loader_pid, loader_fd;
	_Atomic uint32_t shutdown_requested;

	uint32_t n_threads;      /* loader threads; worker w is served by w % n_threads */
	uint32_t engine_opt;     /* enum asyncload_engine asked for */
	_Atomic uint32_t engine; /* the one that runs, once the loader started */
	char engine_reason[160]; /* why: written before state leaves NEW */
	/* asyncload_loader_stats(); written by the loader threads only */
	_Alignas(AL_CACHELINE) _Atomic uint64_t st_hits;
	_Atomic uint64_t st_misses;
	_Atomic uint64_t st_bytes_storage;
	_Atomic uint64_t st_bytes_cache;
	_Atomic uint64_t st_cache_used;
	struct al_bell bells[AL_MAX_THREADS];
};

struct al_worker_shm {
	/* producer: worker */
	_Alignas(AL_CACHELINE) _Atomic uint32_t req_tail;
	/* consumer: loader (and the worker itself once the loader is gone) */
	_Alignas(AL_CACHELINE) _Atomic uint32_t req_head;
	/* producer: loader; futex word the worker sleeps on */
	_Alignas(AL_CACHELINE) _Atomic uint32_t cmp_tail;
	_Atomic uint32_t waiters;
	/* consumer: worker */
	_Alignas(AL_CACHELINE) _Atomic uint32_t cmp_head;
	/* pid | start time << 32 of the holder: one word, so that a claim is
	 * one compare-and-swap and a reused pid is told apart */
	_Atomic uint64_t owner;
	_Atomic uint32_t gen;    /* bumped on every takeover */
	/* followed by uint32_t req_ring[ring_size], uint32_t cmp_ring[ring_size] */
};

struct al_entry_shm {
	_Atomic uint32_t state;
	uint32_t gen;            /* owner generation when requested */
	int32_t error;
	uint32_t name_off;       /* where the caller's path starts in path[] */
	uint32_t open_off;       /* where the path the loader opens starts */
	uint32_t _pad0;
	uint64_t offset;
	uint64_t length;         /* ASYNCLOAD_WHOLE_FILE or a range length */
	uint64_t tag;            /* the caller's, returned untouched */
	uint64_t size;
	int64_t data_rel;        /* data address minus this entry's address: its own
	                          * buffer, or cached bytes after a cached load (the
	                          * loader sets it back when it takes the next request) */
	uint32_t data_skew;      /* O_DIRECT: bytes between buffer and data */
	uint32_t inline_answer;  /* 1: answered by the loop itself, no engine round trip (from the page
	                          * cache or the loader's cache, steps.c): the binding's queue window */
	char path[ASYNCLOAD_PATH_MAX];
};

/* Process-local view of a region. */
struct asyncload_loader {
	struct al_header *hdr;
	size_t map_size;
	int fd;
	pid_t creator;           /* this process created the region */
	pid_t spawned;           /* loader child we forked, 0 if none */
	pid_t spawner;           /* the process that forked it */
	char *root;              /* confinement directory, or NULL */
	_Atomic uint64_t last_alive_check_ns;
};

struct asyncload_worker {
	asyncload_loader *loader;
	struct al_worker_shm *shm;
	uint32_t *req_ring, *cmp_ring;
	uint32_t id;
	uint32_t gen;
	_Atomic uint32_t in_flight;
	struct al_bell *bell;    /* of the loader thread serving this worker */
	pthread_mutex_t lock;    /* process-local: threads of one process */
};

static inline struct al_worker_shm *al_worker_at(const struct al_header *h, uint32_t w)
{
	return (struct al_worker_shm *)((char *)h + h->workers_off + (uint64_t)w * h->worker_stride);
}

static inline uint32_t *al_req_ring(struct al_worker_shm *ws)
{
	return (uint32_t *)((char *)ws + sizeof(*ws));
}

static inline uint32_t *al_cmp_ring(const struct al_header *h, struct al_worker_shm *ws)
{
	return al_req_ring(ws) + h->ring_size;
}

/* Global entry index = worker * queue_depth + local index. */
static inline struct al_entry_shm *al_entry_at(const struct al_header *h, uint32_t idx)
{
	return (struct al_entry_shm *)((char *)h + h->entries_off + (uint64_t)idx * h->entry_stride);
}

static inline uint32_t al_entry_index(const struct al_header *h, const struct al_entry_shm *e)
{
	return (uint32_t)(((const char *)e - ((const char *)h + h->entries_off)) / h->entry_stride);
}

static inline char *al_entry_buffer(struct al_entry_shm *e)
{
	return (char *)e + e->data_rel;
}

/* Entry idx's own buffer, from the layout: the loader writes only where it
 * computed itself, never where a word in shared memory points. */
static inline char *al_entry_own_buffer(const struct al_header *h, uint32_t idx)
{
	return (char *)h + h->data_off + (uint64_t)idx * h->data_stride;
}

/* options.c */
int al_options_check(const struct asyncload_options *o);
uint32_t al_options_threads(const struct asyncload_options *o);

/* util.c-ish helpers shared by region.c, loader.c and worker.c */
int al_futex_wait(_Atomic uint32_t *word, uint32_t expected, int timeout_ms);
int al_futex_wake(_Atomic uint32_t *word, int n);
uint64_t al_now_ns(void);
bool al_state_final(uint32_t state);
/* Marks the region DEAD if its loader is gone without saying so.
 * Returns the (possibly updated) state. */
uint32_t al_check_loader_alive(asyncload_loader *l, bool force);
void al_ring_bell(struct al_bell *b);
void al_ring_all_bells(struct al_header *h);
void al_wake_all_workers(struct al_header *h);
/* Waits for a child, SIGKILL after a few seconds. */
void al_reap_child(pid_t pid);

#endif /* ASYNCLOAD_INTERNAL_H */
