/* SPDX-License-Identifier: MIT */
/*
 * range.c - asyncload_worker_request_range(): a range inside the file, one
 * straddling EOF (the bytes that exist), at and past EOF (0 bytes, no
 * error), longer than max_file_size (-EFBIG even if the file is shorter),
 * ASYNCLOAD_WHOLE_FILE from an offset, and unaligned offsets with O_DIRECT.
 */
#define _GNU_SOURCE
#include "helpers.h"

#include <errno.h>
#include <string.h>

#define FSIZE   100000u
#define MAXSIZE 65536u
#define SEED    4242u

struct rcase {
	uint64_t off, len;
	int err;         /* expected entry error */
	uint64_t size;   /* expected bytes */
};

static const struct rcase cases[] = {
	{ 0, 1, 0, 1 },
	{ 1000, 5000, 0, 5000 },                 /* inside */
	{ 4095, 4098, 0, 4098 },                 /* unaligned both ends */
	{ 4096, 4096, 0, 4096 },                 /* aligned */
	{ 0, MAXSIZE, 0, MAXSIZE },              /* exactly max */
	{ 12345, MAXSIZE, 0, MAXSIZE },
	{ 99000, 5000, 0, 1000 },                /* straddles EOF */
	{ FSIZE - 1, 2, 0, 1 },
	{ FSIZE, 10, 0, 0 },                     /* at EOF */
	{ 200000, 10, 0, 0 },                    /* past EOF */
	{ 1ull << 40, 10, 0, 0 },                /* far past EOF */
	{ (1ull << 63) - 1, 10, 0, 0 },          /* largest off_t */
	{ 1ull << 63, 10, 0, 0 },                /* beyond off_t: still just past EOF */
	{ UINT64_MAX - 5, 10, 0, 0 },            /* offset + length overflows */
	{ 1ull << 63, ASYNCLOAD_WHOLE_FILE, 0, 0 },
	{ 0, MAXSIZE + 1, -EFBIG, 0 },           /* longer than max */
	{ 99000, 70000, -EFBIG, 0 },             /* longer than max, file shorter */
	{ 50000, ASYNCLOAD_WHOLE_FILE, 0, 50000 },
	{ 40000, ASYNCLOAD_WHOLE_FILE, 0, 60000 },
	{ FSIZE - MAXSIZE - 1, ASYNCLOAD_WHOLE_FILE, -EFBIG, 0 }, /* rest is max + 1 */
	{ FSIZE - MAXSIZE, ASYNCLOAD_WHOLE_FILE, 0, MAXSIZE },    /* rest is max */
	{ 0, ASYNCLOAD_WHOLE_FILE, -EFBIG, 0 },  /* whole file > max */
	{ FSIZE, ASYNCLOAD_WHOLE_FILE, 0, 0 },
};

static void run(const char *path, const char *small, bool direct)
{
	struct asyncload_options o = t_opts(4, MAXSIZE, 1);
	asyncload_loader *l;
	asyncload_worker *w = NULL;
	asyncload_entry *e;
	size_t n = sizeof(cases) / sizeof(cases[0]);

	o.direct = direct;
	l = t_start(&o, NULL);
	CHECK_OK(asyncload_worker_get(l, 0, &w));

	/* One at a time, so each entry is matched to its case without doubt. */
	for (size_t i = 0; i < n; i++) {
		struct rcase c = cases[i];

		CHECK_OK(asyncload_worker_request_range(w, path, c.off, c.len));
		CHECK_OK(t_get(w, &e));
		CHECK(!strcmp(asyncload_entry_path(e), path));
		CHECK(asyncload_entry_error(e) == c.err,
		      "case %zu (off %llu len %llu direct %d): error %d (%s), want %d", i,
		      (unsigned long long)c.off, (unsigned long long)c.len, direct,
		      asyncload_entry_error(e), asyncload_strerror(asyncload_entry_error(e)), c.err);
		if (!c.err) {
			CHECK(asyncload_entry_size(e) == c.size,
			      "case %zu (off %llu len %llu direct %d): %llu bytes, want %llu", i,
			      (unsigned long long)c.off, (unsigned long long)c.len, direct,
			      (unsigned long long)asyncload_entry_size(e), (unsigned long long)c.size);
			CHECK(asyncload_entry_offset(e) == c.off, "case %zu: offset %llu", i,
			      (unsigned long long)asyncload_entry_offset(e));
			if (c.size)
				CHECK(t_check_pattern(asyncload_entry_data(e), c.size, SEED, c.off),
				      "case %zu direct %d", i, direct);
		}
		asyncload_entry_release(e);
	}

	/* Ranges of a small file, and a whole-file range equals a request. */
	CHECK_OK(asyncload_worker_request_range(w, small, 0, ASYNCLOAD_WHOLE_FILE));
	CHECK_OK(t_get(w, &e));
	CHECK_OK(asyncload_entry_error(e));
	CHECK(asyncload_entry_size(e) == 4097);
	CHECK(t_check_pattern(asyncload_entry_data(e), 4097, SEED + 1, 0));
	asyncload_entry_release(e);

	CHECK_OK(asyncload_worker_request_range(w, small, 4096, 1000));
	CHECK_OK(t_get(w, &e));
	CHECK_OK(asyncload_entry_error(e));
	CHECK(asyncload_entry_size(e) == 1);
	CHECK(t_check_pattern(asyncload_entry_data(e), 1, SEED + 1, 4096));
	asyncload_entry_release(e);

	/* A range of a missing file fails like a whole-file request. */
	CHECK_OK(asyncload_worker_request_range(w, "/nonexistent/asyncload/range", 0, 10));
	CHECK_OK(t_get(w, &e));
	CHECK_RET(asyncload_entry_error(e), -ENOENT);
	asyncload_entry_release(e);

	/* Many ranges in flight at once over the same file (a shard). */
	int want = 0, got = 0;
	uint64_t seen = 0;
	for (int i = 0; i < 32; i++) {
		int r;
		while ((r = asyncload_worker_request_range(w, path, (uint64_t)i * 3001, 777)) == -EAGAIN) {
			CHECK_OK(t_get(w, &e));
			CHECK_OK(asyncload_entry_error(e));
			uint64_t off = asyncload_entry_offset(e);
			CHECK(off % 3001 == 0 && off / 3001 < 32);
			CHECK(!(seen & (1ull << (off / 3001))), "offset %llu twice", (unsigned long long)off);
			seen |= 1ull << (off / 3001);
			CHECK(asyncload_entry_size(e) == 777);
			CHECK(t_check_pattern(asyncload_entry_data(e), 777, SEED, off));
			asyncload_entry_release(e);
			got++;
		}
		CHECK_OK(r);
		want++;
	}
	while (got < want) {
		CHECK_OK(t_get(w, &e));
		CHECK_OK(asyncload_entry_error(e));
		uint64_t off = asyncload_entry_offset(e);
		CHECK(off % 3001 == 0 && off / 3001 < 32);
		CHECK(!(seen & (1ull << (off / 3001))), "offset %llu twice", (unsigned long long)off);
		seen |= 1ull << (off / 3001);
		CHECK(t_check_pattern(asyncload_entry_data(e), 777, SEED, off));
		asyncload_entry_release(e);
		got++;
	}
	CHECK(seen == 0xffffffffull);

	asyncload_worker_free(w);
	asyncload_loader_free(l);
}

int main(void)
{
	const char *dir;
	char *path, *small;

	t_init("range");
	t_require_io_uring();
	dir = t_tmpdir();
	path = strdup(t_write_file(dir, "shard", FSIZE, SEED));
	small = strdup(t_write_file(dir, "small", 4097, SEED + 1));

	run(path, small, false);
	run(path, small, true);
	free(path);
	free(small);
	printf("range: ok\n");
	return T_EXIT_PASS;
}
