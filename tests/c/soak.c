/* SPDX-License-Identifier: MIT */
/*
 * soak.c - a time-boxed soak of the C library, meant to run under ASan and
 * UBSan (build-san) as well as plain: 8 forked worker processes x queue
 * depth 128 keep one spawned loader busy with a random mix of whole files,
 * ranges (some past the end), missing files and files or ranges above
 * max_file_size. Every answer is checked against the files' byte pattern,
 * every request must be answered exactly once, and neither the loader nor
 * the workers may gain descriptors or heap while it runs.
 *
 * ASYNCLOAD_SOAK_SECONDS (default 5), ASYNCLOAD_SOAK_WORKERS (8) and
 * ASYNCLOAD_SOAK_DEPTH (128) change the shape; tools/soak.py is the Python
 * counterpart.
 */
#define _GNU_SOURCE
#include "helpers.h"

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define N_GOOD   64
#define N_OVER   2
#define N_MISS   8
#define MAX_SIZE (128u * 1024)
#define HEAP_SLACK_KB (8 * 1024)

enum kind { K_GOOD, K_RANGE, K_MISSING, K_OVER, K_BIG_RANGE };

struct want {
	bool used;
	enum kind kind;
	int file;
	uint64_t off, len;
};

struct stats {
	uint64_t requested, answered, ok, enoent, efbig, bytes;
	uint64_t mismatches, unexpected, lost;
	int fds_warm, fds_end;
	long heap_warm_kb, heap_end_kb;
};

static const char *dir;
static char good_path[N_GOOD][512], over_path[N_OVER][512], miss_path[N_MISS][512];
static uint64_t good_size[N_GOOD];

/* Open descriptors of another process (the loader). */
static uint64_t env_u64(const char *name, uint64_t def)
{
	const char *v = getenv(name);
	return v && *v ? strtoull(v, NULL, 10) : def;
}

/* The same (file, offset) always asks for the same length, so two requests
 * in flight with one key expect one answer. */
static uint64_t range_len(uint64_t off)
{
	return 1 + (off * 2654435761u) % MAX_SIZE;
}

static const char *path_of(const struct want *x)
{
	switch (x->kind) {
	case K_MISSING: return miss_path[x->file];
	case K_OVER:    return over_path[x->file];
	default:        return good_path[x->file];
	}
}

static void choose(struct want *x, uint64_t r)
{
	unsigned pick = (unsigned)(r % 100);
	memset(x, 0, sizeof(*x));
	x->used = true;
	x->len = ASYNCLOAD_WHOLE_FILE;
	if (pick < 5) {
		x->kind = K_MISSING;
		x->file = (int)((r >> 8) % N_MISS);
	} else if (pick < 10) {
		x->kind = K_OVER;
		x->file = (int)((r >> 8) % N_OVER);
	} else if (pick < 12) {
		x->kind = K_BIG_RANGE;
		x->file = (int)((r >> 8) % N_GOOD);
		x->off = (r >> 20) % 4096;
		x->len = MAX_SIZE + 1 + (r >> 40) % 4096;
	} else if (pick < 27) {
		x->kind = K_RANGE;
		x->file = (int)((r >> 8) % N_GOOD);
		x->off = (r >> 20) % (good_size[x->file] + 64);
		x->len = range_len(x->off);
	} else {
		x->kind = K_GOOD;
		x->file = (int)((r >> 8) % N_GOOD);
	}
}

static void check_answer(struct stats *st, const struct want *x, asyncload_entry *e)
{
	int err = asyncload_entry_error(e);
	uint64_t size = asyncload_entry_size(e);
	st->answered++;
	switch (x->kind) {
	case K_MISSING:
		if (err == -ENOENT) st->enoent++; else st->mismatches++;
		return;
	case K_OVER:
	case K_BIG_RANGE:
		if (err == -EFBIG && size == 0) st->efbig++; else st->mismatches++;
		return;
	default:
		break;
	}
	uint64_t fsize = good_size[x->file];
	uint64_t avail = fsize > x->off ? fsize - x->off : 0;
	uint64_t want = x->len == ASYNCLOAD_WHOLE_FILE || x->len > avail ? avail : x->len;
	if (err || size != want || asyncload_entry_offset(e) != x->off ||
	    !t_check_pattern(asyncload_entry_data(e), size, (uint64_t)x->file, x->off)) {
		fprintf(stderr, "soak: %s off %llu: err %d size %llu want %llu\n", path_of(x),
		        (unsigned long long)x->off, err, (unsigned long long)size, (unsigned long long)want);
		st->mismatches++;
		return;
	}
	st->ok++;
	st->bytes += size;
}

/* The pending request an answer belongs to (same path and offset). */
static struct want *match(struct want *pend, uint32_t depth, asyncload_entry *e)
{
	const char *p = asyncload_entry_path(e);
	uint64_t off = asyncload_entry_offset(e);
	for (uint32_t i = 0; i < depth; i++)
		if (pend[i].used && pend[i].off == off && strcmp(path_of(&pend[i]), p) == 0)
			return &pend[i];
	return NULL;
}

static void worker(asyncload_loader *l, uint32_t id, uint32_t depth, int64_t warm_at, int64_t stop_at,
                   int out_fd)
{
	struct stats st;
	memset(&st, 0, sizeof(st));
	asyncload_worker *w = NULL;
	asyncload_entry *e;
	struct want *pend = calloc(depth, sizeof(*pend));
	uint64_t rng = 0x9E3779B97F4A7C15ull * (id + 1);
	CHECK(pend != NULL);
	CHECK_OK(asyncload_worker_get(l, id, &w));

	uint32_t in_flight = 0;
	bool warm = false;
	for (;;) {
		int64_t now = t_now_ms();
		if (!warm && now >= warm_at) {
			st.fds_warm = t_count_fds();
			st.heap_warm_kb = t_proc_status_kb(getpid(), "RssAnon:");
			warm = true;
		}
		if (now >= stop_at)
			break;
		while (in_flight < depth) {
			struct want x;
			rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
			choose(&x, rng);
			/* one key, one expected answer: skip a clashing pick */
			bool clash = false;
			for (uint32_t i = 0; i < depth; i++)
				if (pend[i].used && pend[i].off == x.off && pend[i].len != x.len &&
				    strcmp(path_of(&pend[i]), path_of(&x)) == 0)
					clash = true;
			if (clash)
				continue;
			int r = asyncload_worker_request_range(w, path_of(&x), x.off, x.len);
			if (r == -EAGAIN)
				break;
			CHECK_OK(r);
			for (uint32_t i = 0; i < depth; i++)
				if (!pend[i].used) {
					pend[i] = x;
					break;
				}
			in_flight++;
			st.requested++;
		}
		CHECK_OK(t_get(w, &e));
		do {
			struct want *x = match(pend, depth, e);
			if (!x) {
				fprintf(stderr, "soak: answer nobody asked for: %s\n", asyncload_entry_path(e));
				st.unexpected++;
			} else {
				check_answer(&st, x, e);
				x->used = false;
				in_flight--;
			}
			asyncload_entry_release(e);
		} while (asyncload_worker_try_get(w, &e) == 0);
	}
	/* everything asked for comes back */
	while (in_flight) {
		int r = asyncload_worker_wait_get(w, &e, T_WAIT_MS);
		if (r < 0)
			break;
		struct want *x = match(pend, depth, e);
		if (!x) {
			st.unexpected++;
		} else {
			check_answer(&st, x, e);
			x->used = false;
			in_flight--;
		}
		asyncload_entry_release(e);
	}
	st.lost = in_flight;
	if (asyncload_worker_try_get(w, &e) == 0)
		st.unexpected++;
	st.fds_end = t_count_fds();
	st.heap_end_kb = t_proc_status_kb(getpid(), "RssAnon:");
	CHECK(write(out_fd, &st, sizeof(st)) == (ssize_t)sizeof(st));
	free(pend);
	asyncload_worker_free(w);
	_exit(0);
}

int main(void)
{
	t_init("soak");
	uint64_t seconds = env_u64("ASYNCLOAD_SOAK_SECONDS", 5);
	uint32_t n_workers = (uint32_t)env_u64("ASYNCLOAD_SOAK_WORKERS", 8);
	uint32_t depth = (uint32_t)env_u64("ASYNCLOAD_SOAK_DEPTH", 128);

	dir = t_tmpdir();
	static const uint64_t edge[] = { 0, 1, 4095, 4096, 4097, MAX_SIZE - 1, MAX_SIZE };
	for (int i = 0; i < N_GOOD; i++) {
		char name[32];
		snprintf(name, sizeof(name), "good%02d", i);
		good_size[i] = i < 7 ? edge[i] : t_rand() % MAX_SIZE;
		snprintf(good_path[i], sizeof(good_path[i]), "%s", t_write_file(dir, name, good_size[i], (uint64_t)i));
	}
	for (int i = 0; i < N_OVER; i++) {
		char name[32];
		snprintf(name, sizeof(name), "over%d", i);
		snprintf(over_path[i], sizeof(over_path[i]), "%s",
		         t_write_file(dir, name, i ? 2ull * MAX_SIZE : MAX_SIZE + 1, 100u + (uint64_t)i));
	}
	for (int i = 0; i < N_MISS; i++)
		snprintf(miss_path[i], sizeof(miss_path[i]), "%s/missing%d", dir, i);

	struct asyncload_options o = t_opts(depth, MAX_SIZE, n_workers);
	pid_t lpid;
	asyncload_loader *l = t_start(&o, &lpid);

	int p[2];
	CHECK(pipe(p) == 0);
	int64_t t0 = t_now_ms();
	int64_t warm_at = t0 + 1000 + (int64_t)seconds * 100, stop_at = t0 + (int64_t)seconds * 1000;
	/* Idle before and after: while busy the loader also holds the files
	 * being read (as many as it has open-file slots). */
	int lfds_idle = t_settled_fds_of(lpid);
	pid_t kids[ASYNCLOAD_MAX_WORKERS];
	for (uint32_t i = 0; i < n_workers; i++) {
		kids[i] = fork();
		CHECK(kids[i] >= 0);
		if (kids[i] == 0) {
			close(p[0]);
			worker(l, i, depth, warm_at, stop_at, p[1]);
		}
	}
	close(p[1]);
	while (t_now_ms() < warm_at)
		usleep(10000);
	long lheap_warm = t_proc_status_kb(lpid, "RssAnon:");

	struct stats total;
	memset(&total, 0, sizeof(total));
	int bad = 0;
	for (uint32_t i = 0; i < n_workers; i++) {
		struct stats st;
		ssize_t n = read(p[0], &st, sizeof(st));
		CHECK(n == (ssize_t)sizeof(st), "worker report missing (%zd)", n);
		total.requested += st.requested;
		total.answered += st.answered;
		total.ok += st.ok;
		total.enoent += st.enoent;
		total.efbig += st.efbig;
		total.bytes += st.bytes;
		total.mismatches += st.mismatches;
		total.unexpected += st.unexpected;
		total.lost += st.lost;
		if (st.fds_warm != st.fds_end) {
			fprintf(stderr, "soak: a worker went from %d to %d fds\n", st.fds_warm, st.fds_end);
			bad++;
		}
		if (st.heap_end_kb - st.heap_warm_kb > HEAP_SLACK_KB) {
			fprintf(stderr, "soak: a worker's heap grew %ld kB\n", st.heap_end_kb - st.heap_warm_kb);
			bad++;
		}
	}
	long lheap_end = t_proc_status_kb(lpid, "RssAnon:");
	int lfds_end = t_settled_fds_of(lpid);
	for (uint32_t i = 0; i < n_workers; i++)
		t_wait_child_ok(kids[i], "soak worker");
	close(p[0]);
	double secs = (double)(t_now_ms() - t0) / 1000.0;
	asyncload_loader_free(l);

	printf("soak: %u workers x depth %u, %.1f s: %llu requested, %llu answered "
	       "(%llu data, %llu ENOENT, %llu EFBIG, %.0f MiB checked), %llu mismatches, "
	       "%llu unexpected, %llu lost; loader fds %d -> %d, heap %ld -> %ld kB\n",
	       n_workers, depth, secs, (unsigned long long)total.requested,
	       (unsigned long long)total.answered, (unsigned long long)total.ok,
	       (unsigned long long)total.enoent, (unsigned long long)total.efbig,
	       (double)total.bytes / (1 << 20), (unsigned long long)total.mismatches,
	       (unsigned long long)total.unexpected, (unsigned long long)total.lost, lfds_idle,
	       lfds_end, lheap_warm, lheap_end);
	CHECK(total.requested > 0 && total.requested == total.answered);
	CHECK(total.mismatches == 0 && total.unexpected == 0 && total.lost == 0);
	CHECK(total.ok > 0 && total.enoent > 0 && total.efbig > 0);
	CHECK(lfds_idle == lfds_end, "loader fds %d -> %d", lfds_idle, lfds_end);
	CHECK(lheap_end - lheap_warm <= HEAP_SLACK_KB, "loader heap %ld -> %ld kB", lheap_warm, lheap_end);
	CHECK(bad == 0);
	return T_EXIT_PASS;
}
