/* SPDX-License-Identifier: MIT */
/*
 * tags.c - one request, one tag: many requests for the same path at
 * different ranges, each with a random 64-bit tag (0 and UINT64_MAX among
 * them), each complete with its own tag and its own bytes; wait_batch never
 * returns more than max or than what was asked for, takes a ready burst in
 * one call, times out with -ETIMEDOUT, and answers -ESHUTDOWN within about a
 * second when the loader is SIGKILLed mid-wait.
 */
#define _GNU_SOURCE
#include "helpers.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

#define DEPTH 16
#define FILE_SIZE (64u * 1024)
#define SEED 9
#define N_REQUESTS 400

struct req {
	bool used;
	uint64_t tag, offset, length; /* length ASYNCLOAD_WHOLE_FILE: whole file */
};

/* The request of the table with this tag; fails the test if there is none. */
static struct req *find(struct req *tab, uint64_t tag)
{
	for (int i = 0; i < DEPTH; i++)
		if (tab[i].used && tab[i].tag == tag)
			return &tab[i];
	t_fail(__FILE__, __LINE__, "completion with tag %llu, asked for by no request",
	       (unsigned long long)tag);
}

static bool tag_in_use(const struct req *tab, uint64_t tag)
{
	for (int i = 0; i < DEPTH; i++)
		if (tab[i].used && tab[i].tag == tag)
			return true;
	return false;
}

static void check_entry(struct req *tab, asyncload_entry *e)
{
	struct req *r = find(tab, asyncload_entry_tag(e));
	uint64_t want = r->length == ASYNCLOAD_WHOLE_FILE ? FILE_SIZE : r->length;

	if (r->offset >= FILE_SIZE)
		want = 0;
	else if (r->offset + want > FILE_SIZE)
		want = FILE_SIZE - r->offset;
	CHECK_OK(asyncload_entry_error(e));
	CHECK(asyncload_entry_offset(e) == r->offset, "tag %llu: offset %llu, asked %llu",
	      (unsigned long long)r->tag, (unsigned long long)asyncload_entry_offset(e),
	      (unsigned long long)r->offset);
	CHECK(asyncload_entry_size(e) == want, "tag %llu: %llu bytes, want %llu",
	      (unsigned long long)r->tag, (unsigned long long)asyncload_entry_size(e),
	      (unsigned long long)want);
	CHECK(t_check_pattern(asyncload_entry_data(e), want, SEED, r->offset),
	      "tag %llu: bytes of another range", (unsigned long long)r->tag);
	r->used = false;
	asyncload_entry_release(e);
}

/* Many ranges of one file in flight at once, told apart only by their tags. */
static void same_path_ranges(asyncload_worker *w, const char *path)
{
	struct req tab[DEPTH] = { 0 };
	asyncload_entry *out[DEPTH];
	int submitted = 0, answered = 0, in_flight = 0;
	bool saw_zero = false, saw_max = false;

	while (answered < N_REQUESTS) {
		while (submitted < N_REQUESTS && in_flight < DEPTH) {
			uint64_t tag;
			if (submitted == 0)
				tag = 0;
			else if (submitted == 1)
				tag = UINT64_MAX;
			else
				do
					tag = t_rand();
				while (tag_in_use(tab, tag));
			int i = 0;
			while (tab[i].used)
				i++;
			uint64_t off = t_rand() % (FILE_SIZE + 100); /* sometimes past the end */
			uint64_t len = t_rand() % 5 == 0 ? ASYNCLOAD_WHOLE_FILE : 1 + t_rand() % 8192;
			tab[i] = (struct req){ .used = true, .tag = tag, .offset = off, .length = len };
			CHECK_OK(asyncload_worker_submit(w, path, off, len, tag));
			submitted++;
			in_flight++;
		}
		int n = asyncload_worker_wait_batch(w, out, DEPTH, T_WAIT_MS);
		CHECK(n >= 1 && n <= in_flight, "wait_batch gave %d with %d in flight (%s)", n,
		      in_flight, n < 0 ? asyncload_strerror(n) : "");
		for (int k = 0; k < n; k++) {
			uint64_t tag = asyncload_entry_tag(out[k]);
			saw_zero |= tag == 0;
			saw_max |= tag == UINT64_MAX;
			check_entry(tab, out[k]);
		}
		answered += n;
		in_flight -= n;
	}
	CHECK(saw_zero && saw_max, "tags 0 and UINT64_MAX came back: %d %d", saw_zero, saw_max);
	CHECK_RET(asyncload_worker_try_get(w, &out[0]), -EAGAIN);
	/* The tag-0 shorthand still answers with tag 0. */
	CHECK_OK(asyncload_worker_request_range(w, path, 10, 20));
	CHECK_OK(t_get(w, &out[0]));
	CHECK(asyncload_entry_tag(out[0]) == 0 && asyncload_entry_offset(out[0]) == 10);
	asyncload_entry_release(out[0]);
}

/* Submits `n` whole-file requests tagged base, base+1, ...; returns how many
 * completions the first wait_batch(max) took once all had time to finish,
 * after collecting the rest (each tag exactly once). */
static int burst(asyncload_worker *w, const char *path, int n, unsigned max, uint64_t base)
{
	asyncload_entry *out[DEPTH];
	bool seen[DEPTH] = { false };
	int first = -1, got = 0;

	for (int i = 0; i < n; i++)
		CHECK_OK(asyncload_worker_submit(w, path, 0, ASYNCLOAD_WHOLE_FILE, base + (uint64_t)i));
	usleep(300 * 1000);
	while (got < n) {
		int r = asyncload_worker_wait_batch(w, out, max, T_WAIT_MS);
		CHECK(r >= 1 && r <= (int)max && r <= n - got, "wait_batch(max %u) gave %d, %d left",
		      max, r, n - got);
		if (first < 0)
			first = r;
		for (int k = 0; k < r; k++) {
			uint64_t t = asyncload_entry_tag(out[k]) - base;
			CHECK(t < (uint64_t)n && !seen[t], "tag %llu unexpected or twice",
			      (unsigned long long)(t + base));
			seen[t] = true;
			CHECK(asyncload_entry_size(out[k]) == FILE_SIZE);
			asyncload_entry_release(out[k]);
		}
		got += r;
	}
	return first;
}

static void batches(asyncload_worker *w, const char *path)
{
	asyncload_entry *out[DEPTH];

	CHECK_RET(asyncload_worker_wait_batch(w, out, 0, 0), -EINVAL);
	CHECK_RET(asyncload_worker_wait_batch(w, NULL, 4, 0), -EINVAL);

	/* max 1: one per call even with several ready. */
	CHECK(burst(w, path, 4, 1, 1000) == 1);

	/* max above what is ready: a ready burst comes in one call (retried:
	 * 300 ms is only nearly always enough for four small reads). */
	int best = 0;
	for (int tries = 0; tries < 10 && best != 4; tries++) {
		int r = burst(w, path, 4, DEPTH, UINT64_MAX - 3);
		best = r > best ? r : best;
	}
	CHECK(best == 4, "four ready completions never came in one wait_batch (best %d)", best);

	/* Nothing in flight: -ETIMEDOUT after about the timeout. */
	int64_t t0 = t_now_ms();
	CHECK_RET(asyncload_worker_wait_batch(w, out, DEPTH, 300), -ETIMEDOUT);
	int64_t dt = t_now_ms() - t0;
	CHECK(dt >= 250 && dt < 5000, "300 ms timeout took %lld ms", (long long)dt);
	CHECK_RET(asyncload_worker_wait_batch(w, out, DEPTH, 0), -ETIMEDOUT);
}

static int wait_burst(asyncload_worker *w)
{
	asyncload_entry *out[DEPTH];

	return asyncload_worker_wait_batch(w, out, DEPTH, 8000);
}

/* The loader SIGKILLed while wait_batch sleeps: -ESHUTDOWN, soon. */
static void killed_mid_wait(asyncload_loader *l, asyncload_worker *w, pid_t lpid)
{
	asyncload_entry *out[DEPTH];

	t_wait_through_kill(lpid, wait_burst, w, "wait_batch");
	CHECK_RET(asyncload_worker_wait_batch(w, out, DEPTH, 100), -ESHUTDOWN);
	CHECK_RET(asyncload_worker_submit(w, "x", 0, ASYNCLOAD_WHOLE_FILE, 1), -ESHUTDOWN);
	CHECK_RET(asyncload_loader_status(l), -ESHUTDOWN);
}

int main(void)
{
	t_init("tags");
	t_require_io_uring();
	const char *dir = t_tmpdir();
	const char *path = t_write_file(dir, "shard", FILE_SIZE, SEED);
	struct asyncload_options o = t_opts(DEPTH, 1 << 20, 1);
	pid_t lpid;
	asyncload_loader *l = t_start(&o, &lpid);
	asyncload_worker *w = NULL;

	CHECK_OK(asyncload_worker_get(l, 0, &w));
	same_path_ranges(w, path);
	batches(w, path);
	killed_mid_wait(l, w, lpid);
	asyncload_worker_free(w);
	asyncload_loader_free(l);
	printf("tags: ok\n");
	return T_EXIT_PASS;
}
