/* SPDX-License-Identifier: MIT */
/*
 * asyncload.h - the one public header of libasyncload.
 *
 * A loader process reads files with io_uring into a shared-memory region;
 * worker processes (forked from the creator, or attached by a handle string)
 * request files by path and get zero-copy access to the bytes.
 *
 * Conventions (as in liburing and sd-bus):
 *   - every int return is 0 (or a count) on success and a negative errno on
 *     failure; the library never prints and never sets errno;
 *   - handles are opaque; constructors are *_new(&ret, ...); destructors take
 *     NULL and return NULL.
 */
#ifndef ASYNCLOAD_H
#define ASYNCLOAD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

#define ASYNCLOAD_VERSION_MAJOR 0
#define ASYNCLOAD_VERSION_MINOR 2

/* Limits enforced by asyncload_loader_new() (-EINVAL beyond them). */
#define ASYNCLOAD_MAX_WORKERS      1024u
#define ASYNCLOAD_MAX_QUEUE_DEPTH  8192u
#define ASYNCLOAD_MAX_ENTRIES      65536u         /* n_workers * queue_depth */
#define ASYNCLOAD_MAX_FILE_SIZE    (1ull << 36)   /* 64 GiB per entry */
#define ASYNCLOAD_PATH_MAX         4096u          /* including the NUL */
#define ASYNCLOAD_HANDLE_MAX       128u           /* handle string, with NUL */
#define ASYNCLOAD_MAX_IDLE_ITERS   20000u         /* one idle poll waits 50 us: at most 1 s */
#define ASYNCLOAD_MAX_THREADS      16u
#define ASYNCLOAD_MAX_CACHE_BYTES  (1ull << 40)   /* 1 TiB of cache (address space) */

/* The length that means "to the end of the file" (asyncload_worker_submit(),
 * asyncload_worker_request_range()): not a length, a marker. It is the one
 * value never checked against max_file_size; the file's bytes from the
 * offset are loaded, and a file longer than max_file_size fails with -EFBIG.
 * Every other length is a range: one above max_file_size fails with -EFBIG
 * even if the file is shorter. */
#define ASYNCLOAD_WHOLE_FILE UINT64_MAX

/* asyncload_options.engine: how the loader does its I/O. */
enum asyncload_engine {
	ASYNCLOAD_ENGINE_AUTO = 0,     /* io_uring where a ring with what the loader
	                                * needs can be set up, else threads */
	ASYNCLOAD_ENGINE_IO_URING = 1,
	ASYNCLOAD_ENGINE_THREADS = 2,  /* a pool of I/O threads: no io_uring needed */
};

typedef struct asyncload_loader asyncload_loader;
typedef struct asyncload_worker asyncload_worker;
typedef struct asyncload_entry  asyncload_entry;

struct asyncload_options {
	uint32_t queue_depth;   /* entries per worker = most requests a worker has in flight */
	uint64_t max_file_size; /* largest file (or range) an entry holds; larger loads fail -EFBIG */
	uint32_t n_workers;
	uint32_t dispatch_n;    /* submit once this many requests are pending ...            */
	uint32_t idle_iters;    /* ... or after this many polls bring nothing new (0: at once);
	                         * a poll waits up to 50 us for new requests. dispatch_n is
	                         * capped at n_workers * queue_depth. */
	bool     direct;        /* O_DIRECT: bypass the page cache (falls back where unsupported) */
	const char *root;       /* NULL, or confine every load to this directory tree:
	                         * relative paths resolve against it, absolute ones must
	                         * lie beneath it, and nothing (.., symlinks) escapes it
	                         * (-EXDEV), enforced by the kernel (RESOLVE_BENEATH) */
	uint32_t n_threads;     /* loader threads, each with its own io_uring, each serving
	                         * every n_threads-th worker; 0: one per CPU (at most 4),
	                         * never more than n_workers */
	uint32_t engine;        /* enum asyncload_engine; the environment variable
	                         * ASYNCLOAD_ENGINE=io_uring|threads overrides AUTO */
	uint64_t cache_bytes;   /* 0: no cache. Else the loader keeps the bytes of the
	                         * loads it reads, in shared memory, until this many
	                         * bytes are used, and answers a later request for the
	                         * same path, offset and length from there (no I/O, no
	                         * copy). Never evicts; assumes files do not change
	                         * while the loader runs (a new loader starts empty). */
};

/* What asyncload_option_info() says of one field of struct asyncload_options:
 * its name, kind, default and accepted range ([min, max] for UINT and BOOL;
 * STRING: NULL or a non-empty path shorter than ASYNCLOAD_PATH_MAX). Bindings
 * and docs take their checks and option lists from here. */
enum asyncload_option_type {
	ASYNCLOAD_OPTION_UINT = 0,
	ASYNCLOAD_OPTION_BOOL = 1,
	ASYNCLOAD_OPTION_STRING = 2,
};

struct asyncload_option_info {
	const char *name;
	int type;          /* enum asyncload_option_type */
	uint64_t def, min, max;
	const char *doc;
	const char *choices; /* NULL, or the names of values min..max, space-separated */
};

/* The index-th option (0, 1, ... in declaration order), or -ENOENT past the
 * last one. The strings are static. */
int  asyncload_option_info(unsigned index, struct asyncload_option_info *info);

/* Fills *opts with the defaults: queue_depth 64, max_file_size 64 MiB,
 * n_workers 1, dispatch_n 1, idle_iters 0, direct false, root NULL,
 * n_threads 0 (automatic), engine auto, cache_bytes 0 (no cache). */
void asyncload_options_init(struct asyncload_options *opts);

/* ---- loader ------------------------------------------------------------ */

/* Creates the shared region (an unnamed memfd). Memory is committed only as
 * data is loaded. -EINVAL for out-of-range options. */
int  asyncload_loader_new(asyncload_loader **ret, const struct asyncload_options *opts);

/* Attaches to an existing loader from a process that was not forked from its
 * creator (spawn, forkserver, another program), by the string that
 * asyncload_loader_handle() wrote. -ENOENT if no such loader exists any more,
 * -EINVAL for a malformed handle. */
int  asyncload_loader_attach(asyncload_loader **ret, const char *handle);

/* Writes the NUL-terminated handle of this loader into buf (at most
 * ASYNCLOAD_HANDLE_MAX bytes). Returns its length, or -ENOSPC. */
int  asyncload_loader_handle(const asyncload_loader *l, char *buf, size_t len);

/* Be the loader: runs the io_uring event loop in the calling thread and
 * returns 0 after shutdown (or a negative errno if it could not start).
 * -EBUSY if a loader already runs for this region. */
int  asyncload_loader_run(asyncload_loader *l);

/* Forks a loader process and returns once it serves requests (or with the
 * error that stopped it from starting); *pid (if pid is not NULL) is its pid. The child ignores SIGINT, shuts down
 * cleanly on SIGTERM, and exits by itself when the process that spawned it
 * dies. */
int  asyncload_loader_spawn(asyncload_loader *l, pid_t *pid);

/* The engine of this loader: "io_uring" or "threads" once it has started
 * (asyncload_loader_status() 0 or later), before that the one asked for
 * ("auto" possible). Never NULL for a valid handle. */
const char *asyncload_loader_engine(const asyncload_loader *l);

/* Why that engine runs, in words ("asked for", or why io_uring could not
 * be used); "" before the loader started. */
const char *asyncload_loader_engine_reason(const asyncload_loader *l);

/* Asks the loader to stop, from any attached process; does not wait.
 * Requests already being read complete normally; requests not yet started
 * complete with -ESHUTDOWN. */
int  asyncload_loader_shutdown(asyncload_loader *l);

/* 0 while a loader serves this region, -EAGAIN before one has started,
 * -ESHUTDOWN once it stopped or died (or the error that kept it from
 * starting). */
int  asyncload_loader_status(asyncload_loader *l);

/* Unmaps the region. In the process that spawned the loader, it also shuts
 * the loader down and reaps it (SIGKILL after 5 s). Must not be called while
 * asyncload_loader_run() still runs on the same handle in another thread:
 * shut down and wait for it to return first. */
asyncload_loader *asyncload_loader_free(asyncload_loader *l);

/* The options the region was created with (root as its resolved real path,
 * valid while the handle lives). */
int  asyncload_loader_get_options(const asyncload_loader *l, struct asyncload_options *opts);

/* What the loader did so far, counted in the shared region (any attached
 * process reads the same numbers). */
struct asyncload_stats {
	uint64_t hits;               /* requests answered from the cache */
	uint64_t misses;             /* requests the cache could not answer (0 without one) */
	uint64_t bytes_from_storage; /* bytes of successful loads read from files */
	uint64_t bytes_from_cache;   /* bytes of loads answered from the cache */
	uint64_t cache_bytes_used;   /* cache bytes handed out (never more than cache_bytes) */
	uint64_t cache_bytes;        /* the option */
};

/* Fills *st; -EINVAL for NULL arguments. */
int  asyncload_loader_stats(const asyncload_loader *l, struct asyncload_stats *st);

/* ---- worker ------------------------------------------------------------ */

/* Claims worker slot `id` for the calling process. -EINVAL for id out of
 * range; -EBUSY if a live process holds it (the caller included: one handle
 * per slot and process). A slot whose holder died (or freed it) is taken
 * over with its whole queue: entries it held are reclaimed, and reads it
 * left in flight are waited for (up to 5 s). A worker handle belongs to the
 * process that got it and is safe to use from several of its threads; a
 * forked child must not use (or free) handles or entries it inherited: it
 * claims a slot of its own. */
int  asyncload_worker_get(asyncload_loader *l, uint32_t id, asyncload_worker **ret);

/* Gives the slot back. The next claim of the slot (by any process) reuses
 * every entry, also those still held: release them, and stop reading their
 * data, before this call. */
asyncload_worker *asyncload_worker_free(asyncload_worker *w);

/* Queues a load of `length` bytes at `offset` of `path` (offset 0 and
 * length ASYNCLOAD_WHOLE_FILE: the whole file; ASYNCLOAD_WHOLE_FILE is "to
 * the end of the file" from any offset, any other length above
 * max_file_size completes with -EFBIG) and attaches `tag`, any
 * 64-bit value, which the completion carries back untouched
 * (asyncload_entry_tag()): it tells apart requests for the same path.
 * Returns 0, or at once: -EAGAIN no free entry (release one), -EINVAL empty
 * path, -ENAMETOOLONG too long, -ESHUTDOWN loader stopped. Relative paths
 * are resolved as for asyncload_worker_request(). */
int  asyncload_worker_submit(asyncload_worker *w, const char *path,
                             uint64_t offset, uint64_t length, uint64_t tag);

/* Queues a load of the whole file, tag 0. Relative paths are resolved against the
 * caller's working directory at request time (against `root` when the loader
 * is confined). Returns 0, or at once: -EAGAIN no free entry (release one),
 * -EINVAL empty path, -ENAMETOOLONG too long, -ESHUTDOWN loader stopped. */
int  asyncload_worker_request(asyncload_worker *w, const char *path);

/* Queues a load of `length` bytes at `offset` (ASYNCLOAD_WHOLE_FILE: to the
 * end), tag 0. Past the end of file the entry holds the bytes that exist; a length
 * above max_file_size completes with -EFBIG. */
int  asyncload_worker_request_range(asyncload_worker *w, const char *path,
                                    uint64_t offset, uint64_t length);

/* A completed entry, or -EAGAIN if none is ready, or -ESHUTDOWN once the
 * loader stopped or died and nothing is left to return. */
int  asyncload_worker_try_get(asyncload_worker *w, asyncload_entry **ret);

/* Sleeps (futex, no spinning) until an entry completes. timeout_ms < 0 waits
 * forever. -ETIMEDOUT, -EINTR (a signal arrived while it slept: check it and
 * call again; a signal handled just before the sleep is not reported, so
 * callers that must react to signals wait in finite slices),
 * -ESHUTDOWN (loader stopped or died; noticed within 100 ms). */
int  asyncload_worker_wait_get(asyncload_worker *w, asyncload_entry **ret, int timeout_ms);

/* Sleeps like asyncload_worker_wait_get() until at least one entry has
 * completed, then moves up to `max` completed entries into out[] without
 * sleeping again. Returns how many (1..max), or -EINVAL (max 0), -ETIMEDOUT,
 * -EINTR, -ESHUTDOWN as wait_get does. A consumer wakes once per burst. */
int  asyncload_worker_wait_batch(asyncload_worker *w, asyncload_entry **out,
                                 unsigned max, int timeout_ms);

/* Requests queued or being read (not yet returned by *_get). */
uint32_t asyncload_worker_in_flight(const asyncload_worker *w);

/* ---- entry ------------------------------------------------------------- */

/* asyncload_entry_error() of a load: 0, or
 *   -ENOENT missing, -EISDIR a directory, -EINVAL not a regular file (FIFO,
 *   socket, device: never read, never blocks), -EFBIG larger than
 *   max_file_size, -ELOOP symlink loop, -EACCES permission, -EXDEV the path
 *   escapes `root`, -ESHUTDOWN the loader stopped before reading it, or any
 *   other -errno from opening or reading the file. */

const char *asyncload_entry_path(const asyncload_entry *e);   /* as requested */
const void *asyncload_entry_data(const asyncload_entry *e);
uint64_t    asyncload_entry_size(const asyncload_entry *e);   /* exact bytes, no padding */
uint64_t    asyncload_entry_offset(const asyncload_entry *e); /* 0 for whole files */
uint64_t    asyncload_entry_tag(const asyncload_entry *e);    /* the request's tag */
int         asyncload_entry_error(const asyncload_entry *e);  /* 0, or -errno of this load */
/* Hands the entry back for reuse; its data must not be touched afterwards.
 * NULL is ignored; releasing an entry twice is harmless until it is reused. */
void        asyncload_entry_release(asyncload_entry *e);

/* Message for a negative errno returned by this library. */
const char *asyncload_strerror(int err);

#ifdef __cplusplus
}
#endif

#endif /* ASYNCLOAD_H */
