/* SPDX-License-Identifier: MIT */
/*
 * helpers.h - shared helpers of the C tests in tests/c: fail-fast checks,
 * temporary directories on a real disk, files with a deterministic byte
 * pattern, and starting a spawned loader.
 *
 * Every test is one small main(), as in liburing's test suite. Exit codes:
 * 0 pass, 1 fail, 77 skipped (only when io_uring is unavailable).
 */
#ifndef ASYNCLOAD_TEST_HELPERS_H
#define ASYNCLOAD_TEST_HELPERS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/types.h>

#include "asyncload.h"

#define T_EXIT_PASS 0
#define T_EXIT_FAIL 1
#define T_EXIT_SKIP 77

/* Generous upper bound for one wait: a load that takes longer than this on a
 * test-sized file is treated as a hang, not as slowness. */
#define T_WAIT_MS 10000

void t_fail(const char *file, int line, const char *fmt, ...)
	__attribute__((format(printf, 3, 4), noreturn));

void t_check_failed(const char *file, int line, const char *cond, const char *fmt, ...)
	__attribute__((format(printf, 4, 5), noreturn));

/* Aborts the test (exit 1, also in forked children) when cond is false; an
 * optional printf format and arguments say more. */
#define CHECK(cond, ...) \
	do { if (!(cond)) t_check_failed(__FILE__, __LINE__, #cond, " " __VA_ARGS__); } while (0)

/* expr is a library call returning 0 or -errno; expects exactly `want`. */
#define CHECK_RET(expr, want) \
	do { \
		int t_r_ = (expr), t_w_ = (want); \
		if (t_r_ != t_w_) \
			t_fail(__FILE__, __LINE__, "%s returned %d (%s), expected %d (%s)", \
			       #expr, t_r_, asyncload_strerror(t_r_), t_w_, asyncload_strerror(t_w_)); \
	} while (0)

#define CHECK_OK(expr) CHECK_RET(expr, 0)

/* Exits 77 unless this kernel lets us create an io_uring. */
void t_require_io_uring(void);

/* Name of the running test, for messages; set by t_init(). */
extern const char *t_name;
void t_init(const char *name);

/* Creates a fresh directory on a real disk (not tmpfs, so that O_DIRECT is
 * exercised): $ASYNCLOAD_TEST_DIR, else /var/tmp. It is removed at exit by
 * the process that created it (not by forked children). Mode 0755. */
const char *t_tmpdir(void);

/* dir + "/" + name in a static rotating buffer (a few calls stay valid). */
const char *t_path(const char *dir, const char *name);

/* The deterministic content: byte at offset `off` of a file with `seed`. */
static inline uint8_t t_pattern(uint64_t seed, uint64_t off)
{
	uint64_t x = (seed + 1) * 0x9E3779B97F4A7C15ull ^ (off / 8) * 0xBF58476D1CE4E5B9ull;
	x ^= x >> 31;
	x *= 0x94D049BB133111EBull;
	x ^= x >> 29;
	return (uint8_t)(x >> (8 * (off % 8)));
}

/* Writes `size` pattern bytes of `seed`; mode 0644. Returns the path. */
const char *t_write_file(const char *dir, const char *name, uint64_t size, uint64_t seed);

/* Whole file through read(2); *size set. Caller frees. NULL on error. */
void *t_read_file(const char *path, uint64_t *size);

/* True if data[0..size) is the pattern of `seed` starting at `offset`. On a
 * mismatch prints the first differing offset. */
bool t_check_pattern(const void *data, uint64_t size, uint64_t seed, uint64_t offset);

/* Deterministic pseudo-random numbers for the tests (xorshift). */
uint64_t t_rand(void);

/* Options for a small loader: queue_depth, max_file_size, n_workers. */
struct asyncload_options t_opts(uint32_t depth, uint64_t max_size, uint32_t n_workers);

/* asyncload_loader_new + asyncload_loader_spawn, failing the test on error
 * (after t_require_io_uring()). *pid may be NULL. */
asyncload_loader *t_start(const struct asyncload_options *o, pid_t *pid);

/* asyncload_worker_wait_get with T_WAIT_MS, retried on -EINTR; fails the
 * test on -ETIMEDOUT (a hang) and returns any other result. */
int t_get(asyncload_worker *w, asyncload_entry **e);

/* Monotonic milliseconds. */
int64_t t_now_ms(void);

/* Number of open file descriptors of this process (/proc/self/fd). */
int t_count_fds(void);
/* Descriptors of another process once its count holds still: a loader
 * closes the files of answered requests a moment after answering them. */
int t_settled_fds_of(pid_t pid);

/* kB value of `field` ("VmRSS:") in /proc/<pid>/status; -1 if absent. */
long t_proc_status_kb(pid_t pid, const char *field);

/* Forks a child that sends `sig` to `target` after `ms` milliseconds and
 * exits 0 if the kill worked; reap it with t_wait_child_ok(). */
pid_t t_kill_later(pid_t target, int sig, int ms);

/* Sleeps in wait(w) (retried on -EINTR) while the loader `lpid` is
 * SIGKILLed 200 ms in; fails the test unless the wait ends with -ESHUTDOWN
 * soon after (about a second, with slack for sanitizers). `what` names the
 * wait in the message; returns the milliseconds the wait took. */
int64_t t_wait_through_kill(pid_t lpid, int (*wait)(asyncload_worker *w), asyncload_worker *w,
                            const char *what);

/* Waits for child `pid` and fails the test unless it exited with 0. */
void t_wait_child_ok(pid_t pid, const char *what);

/* Waits up to ms for a child to exit; returns its status, or -1 on timeout
 * (the child is then killed and reaped). */
int t_wait_child_timeout(pid_t pid, int ms);

#endif /* ASYNCLOAD_TEST_HELPERS_H */
