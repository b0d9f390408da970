/* SPDX-License-Identifier: MIT */
/*
 * cache.c - the loader's cache (cache_bytes): every cached byte equals the
 * file (whole files and ranges, buffered and O_DIRECT), a hit does no I/O
 * and commits no memory and always points at the same bytes (no copy), a
 * full cache keeps what it has and later loads still come right from
 * storage, errors are not cached, the stats are exact, a forked process
 * attached by handle hits what another loaded, and a loader killed with a
 * full cache leaves workers with -ESHUTDOWN and no descriptor behind.
 */
#define _GNU_SOURCE
#include "helpers.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define NFILES  12
#define MAXSIZE (256u << 10)
#define CACHE   (160u << 10)

static uint64_t fsize(int i)
{
	return 20000u + (uint64_t)i * 3001u; /* unaligned sizes */
}

static uint64_t round_to(uint64_t v, uint64_t a)
{
	return (v + a - 1) / a * a;
}

/* Bytes of the memfd that hold pages: our mapping of the region. */
static uint64_t region_blocks(void)
{
	char link[256], path[64];
	for (int fd = 0; fd < 1024; fd++) {
		snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
		ssize_t n = readlink(path, link, sizeof(link) - 1);
		if (n <= 0)
			continue;
		link[n] = '\0';
		if (strncmp(link, "/memfd:asyncload", 16) == 0) {
			struct stat st;
			CHECK(fstat(fd, &st) == 0);
			return (uint64_t)st.st_blocks * 512;
		}
	}
	t_fail(__FILE__, __LINE__, "no memfd of the region among our descriptors");
}

static void stats(asyncload_loader *l, struct asyncload_stats *st)
{
	CHECK_OK(asyncload_loader_stats(l, st));
}

/* Loads path[off, off+len) alone and checks it; returns its data address. */
static const void *load(asyncload_worker *w, const char *path, uint64_t off, uint64_t len, uint64_t seed,
                        uint64_t want)
{
	asyncload_entry *e;
	CHECK_OK(asyncload_worker_request_range(w, path, off, len));
	CHECK_OK(t_get(w, &e));
	CHECK(asyncload_entry_error(e) == 0, "%s: %s", path, asyncload_strerror(asyncload_entry_error(e)));
	CHECK(asyncload_entry_size(e) == want, "%s [%llu +%llu]: %llu bytes, want %llu", path,
	      (unsigned long long)off, (unsigned long long)len, (unsigned long long)asyncload_entry_size(e),
	      (unsigned long long)want);
	CHECK(t_check_pattern(asyncload_entry_data(e), want, seed, off), "%s: wrong bytes", path);
	const void *p = asyncload_entry_data(e);
	asyncload_entry_release(e);
	return p;
}

static int wait_one(asyncload_worker *w)
{
	asyncload_entry *e;
	return asyncload_worker_wait_get(w, &e, 8000);
}

static void run(const char *dir, bool direct)
{
	const char *paths[NFILES];
	char names[NFILES][32];
	for (int i = 0; i < NFILES; i++) {
		snprintf(names[i], sizeof(names[i]), "f%d-%d", i, direct);
		paths[i] = strdup(t_write_file(dir, names[i], fsize(i), 100 + (uint64_t)i));
	}
	/* What fits, loaded one at a time in order: a bump allocation of the
	 * bytes read (whole pages with O_DIRECT), never evicting. */
	uint64_t next = 0, kept_bytes = 0;
	bool kept[NFILES];
	int n_kept = 0;
	for (int i = 0; i < NFILES; i++) {
		uint64_t a = direct ? 4096 : 64, len = direct ? round_to(fsize(i), 4096) : fsize(i);
		uint64_t at = round_to(next, a);
		kept[i] = at + len <= CACHE;
		if (kept[i]) {
			next = at + len;
			kept_bytes += fsize(i);
			n_kept++;
		}
	}
	CHECK(n_kept > 2 && n_kept < NFILES, "the test wants a cache that fills: %d of %d", n_kept, NFILES);

	int fds0 = t_count_fds();
	struct asyncload_options o = t_opts(4, MAXSIZE, 2);
	o.direct = direct;
	o.cache_bytes = CACHE;
	pid_t lpid;
	asyncload_loader *l = t_start(&o, &lpid);
	struct asyncload_options back;
	CHECK_OK(asyncload_loader_get_options(l, &back));
	CHECK(back.cache_bytes == CACHE);
	asyncload_worker *w;
	CHECK_OK(asyncload_worker_get(l, 0, &w));
	struct asyncload_stats st;

	/* Errors are not cached: a file missing at first loads once it exists. */
	char missing[64];
	snprintf(missing, sizeof(missing), "late-%d", direct);
	const char *late = t_path(dir, missing);
	asyncload_entry *e;
	CHECK_OK(asyncload_worker_request(w, late));
	CHECK_OK(t_get(w, &e));
	CHECK_RET(asyncload_entry_error(e), -ENOENT);
	asyncload_entry_release(e);
	stats(l, &st);
	CHECK(st.misses == 1 && st.hits == 0 && st.cache_bytes_used == 0 && st.cache_bytes == CACHE);

	/* Epoch 1: every file from storage; those that fit are kept. */
	uint64_t all = 0;
	for (int i = 0; i < NFILES; i++) {
		load(w, paths[i], 0, ASYNCLOAD_WHOLE_FILE, 100 + (uint64_t)i, fsize(i));
		all += fsize(i);
	}
	stats(l, &st);
	CHECK(st.hits == 0 && st.misses == 1 + NFILES, "hits %llu misses %llu", (unsigned long long)st.hits,
	      (unsigned long long)st.misses);
	CHECK(st.bytes_from_storage == all && st.bytes_from_cache == 0);
	CHECK(st.cache_bytes_used == next, "used %llu, want %llu", (unsigned long long)st.cache_bytes_used,
	      (unsigned long long)next);
	uint64_t blocks1 = region_blocks();
	CHECK(blocks1 <= CACHE + 8u * (MAXSIZE + 8192) + (1u << 20), "region holds %llu bytes",
	      (unsigned long long)blocks1);

	/* Epochs 2 and 3: the kept files are hits at the same address each
	 * time (the cached bytes, no copy), the others come from storage. */
	const void *addr[NFILES];
	for (int epoch = 0; epoch < 2; epoch++) {
		for (int i = NFILES - 1; i >= 0; i--) {
			const void *p = load(w, paths[i], 0, ASYNCLOAD_WHOLE_FILE, 100 + (uint64_t)i, fsize(i));
			if (epoch == 0)
				addr[i] = p;
			else if (kept[i])
				CHECK(p == addr[i], "file %d: a hit at another address", i);
		}
	}
	stats(l, &st);
	CHECK(st.hits == 2u * (uint64_t)n_kept, "hits %llu, want %d", (unsigned long long)st.hits, 2 * n_kept);
	CHECK(st.misses == 1 + NFILES + 2u * (uint64_t)(NFILES - n_kept));
	CHECK(st.bytes_from_cache == 2 * kept_bytes);
	CHECK(st.bytes_from_storage == all + 2 * (all - kept_bytes));
	CHECK(st.cache_bytes_used == next, "a full cache changed: %llu", (unsigned long long)st.cache_bytes_used);
	/* hits read nothing into the entries; the unkept files reuse theirs */
	CHECK(region_blocks() <= blocks1 + 4u * (MAXSIZE + 8192), "%llu > %llu", (unsigned long long)region_blocks(),
	      (unsigned long long)blocks1);

	/* The late file now exists: loaded from storage (the cache is full). */
	t_write_file(dir, missing, 5000, 77);
	load(w, late, 0, ASYNCLOAD_WHOLE_FILE, 77, 5000);

	/* Ranges are their own keys: a range of a kept file is not a hit. */
	uint64_t m0 = st.misses;
	load(w, paths[0], 100, 5000, 100, 5000);
	stats(l, &st);
	CHECK(st.misses == m0 + 2);

	/* Another process, attached by handle, hits what this one loaded. */
	char handle[ASYNCLOAD_HANDLE_MAX];
	CHECK(asyncload_loader_handle(l, handle, sizeof(handle)) > 0);
	uint64_t h0 = st.hits;
	pid_t child = fork();
	CHECK(child >= 0);
	if (child == 0) {
		asyncload_loader *l2;
		asyncload_worker *w2;
		CHECK_OK(asyncload_loader_attach(&l2, handle));
		CHECK_OK(asyncload_worker_get(l2, 1, &w2));
		for (int i = 0; i < NFILES; i++)
			load(w2, paths[i], 0, ASYNCLOAD_WHOLE_FILE, 100 + (uint64_t)i, fsize(i));
		asyncload_worker_free(w2);
		asyncload_loader_free(l2);
		_exit(0);
	}
	t_wait_child_ok(child, "attached child");
	stats(l, &st);
	CHECK(st.hits == h0 + (uint64_t)n_kept, "the other process hit %llu, want %d",
	      (unsigned long long)(st.hits - h0), n_kept);

	/* A loader killed with a full cache: the waiting worker hears of it. */
	t_wait_through_kill(lpid, wait_one, w, "wait with a full cache");
	asyncload_worker_free(w);
	asyncload_loader_free(l);
	CHECK(t_count_fds() == fds0, "descriptors: %d, were %d", t_count_fds(), fds0);
	for (int i = 0; i < NFILES; i++)
		free((void *)paths[i]);
}

int main(void)
{
	t_init("cache");
	t_require_io_uring();
	const char *dir = t_tmpdir();
	run(dir, false);
	run(dir, true);

	/* Without a cache nothing is kept, and nothing counts as a miss. */
	struct asyncload_options o = t_opts(2, MAXSIZE, 1);
	asyncload_loader *l = t_start(&o, NULL);
	asyncload_worker *w;
	CHECK_OK(asyncload_worker_get(l, 0, &w));
	const char *p = t_write_file(dir, "plain", 3000, 5);
	for (int i = 0; i < 2; i++)
		load(w, p, 0, ASYNCLOAD_WHOLE_FILE, 5, 3000);
	struct asyncload_stats st;
	stats(l, &st);
	CHECK(st.hits == 0 && st.misses == 0 && st.bytes_from_storage == 6000 && st.cache_bytes_used == 0);
	asyncload_worker_free(w);
	asyncload_loader_free(l);
	return T_EXIT_PASS;
}
