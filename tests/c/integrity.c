/* SPDX-License-Identifier: MIT */
/*
 * integrity.c - every byte the loader hands out equals what read(2) returns,
 * over a few hundred files of edge-case and random sizes, buffered and with
 * O_DIRECT, with the queue kept full so entries are reused many times.
 *
 * Edge sizes: 0, 1, 511/512/513, 4095/4096/4097, max_file_size - 1,
 * exactly max_file_size (ok) and max_file_size + 1 (-EFBIG). max_file_size
 * is tried both page-aligned and unaligned, because O_DIRECT reads in
 * aligned blocks and must still report the exact size.
 */
#define _GNU_SOURCE
#include "helpers.h"

#include <errno.h>
#include <string.h>
#include <sys/stat.h>

#define N_RANDOM 160

struct file {
	char name[32];
	uint64_t size;
	uint64_t seed;
	int want_err;   /* 0 or -EFBIG */
	int requested;  /* times requested */
	int completed;  /* times an entry came back */
};

static struct file files[64 + N_RANDOM];
static int n_files;

static void add_file(const char *dir, uint64_t size, uint64_t max)
{
	struct file *f = &files[n_files];

	snprintf(f->name, sizeof(f->name), "f%04d", n_files);
	f->size = size;
	f->seed = (uint64_t)n_files * 7919 + size;
	f->want_err = size > max ? -EFBIG : 0;
	t_write_file(dir, f->name, size, f->seed);
	n_files++;
}

static void make_files(const char *dir, uint64_t max)
{
	static const uint64_t fixed[] = { 0, 1, 2, 511, 512, 513, 4095, 4096, 4097, 8191, 8192,
					  65535, 65536, 65537, 131072 + 7 };
	n_files = 0;
	for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++)
		if (fixed[i] <= max)
			add_file(dir, fixed[i], max);
	add_file(dir, max - 1, max);
	add_file(dir, max, max);
	add_file(dir, max + 1, max);
	add_file(dir, 3 * max + 17, max);
	for (int i = 0; i < N_RANDOM; i++) {
		uint64_t r = t_rand();
		/* Mostly small files, as in image data sets, some near the limit. */
		uint64_t size = (r & 3) == 0 ? (t_rand() % (max + 1)) : (t_rand() % 20000);
		add_file(dir, size, max);
	}
}

static void check_entry(const char *dir, asyncload_entry *e)
{
	const char *path = asyncload_entry_path(e);
	const char *slash;
	struct file *f;
	int idx;

	CHECK(path != NULL);
	slash = strrchr(path, '/');
	CHECK(slash && sscanf(slash + 1, "f%d", &idx) == 1 && idx >= 0 && idx < n_files,
	      "unexpected entry path '%s'", path);
	f = &files[idx];
	CHECK(!strcmp(path, t_path(dir, f->name)), "path '%s' is not as requested", path);
	CHECK(f->completed < f->requested, "%s came back more often than requested", f->name);
	f->completed++;

	CHECK(asyncload_entry_error(e) == f->want_err, "%s (size %llu): error %d (%s), want %d",
	      f->name, (unsigned long long)f->size, asyncload_entry_error(e),
	      asyncload_strerror(asyncload_entry_error(e)), f->want_err);
	if (f->want_err)
		return;
	CHECK(asyncload_entry_offset(e) == 0);
	CHECK(asyncload_entry_size(e) == f->size, "%s: size %llu, want %llu", f->name,
	      (unsigned long long)asyncload_entry_size(e), (unsigned long long)f->size);

	uint64_t rsize;
	void *ref = t_read_file(t_path(dir, f->name), &rsize);
	CHECK(ref && rsize == f->size);
	if (f->size) {
		const void *data = asyncload_entry_data(e);
		CHECK(data != NULL, "%s: no data pointer", f->name);
		CHECK(memcmp(data, ref, f->size) == 0, "%s (size %llu): bytes differ from read(2)",
		      f->name, (unsigned long long)f->size);
		CHECK(t_check_pattern(data, f->size, f->seed, 0));
	}
	free(ref);
}

static void run(const char *dir, const struct asyncload_options *o, int rounds)
{
	pid_t pid;
	asyncload_loader *l = t_start(o, &pid);
	asyncload_worker *w = NULL;
	asyncload_entry *e;
	int total = 0, done = 0;

	CHECK_OK(asyncload_worker_get(l, 0, &w));
	for (int i = 0; i < n_files; i++)
		files[i].requested = files[i].completed = 0;

	/* Keep the queue full: request until -EAGAIN, then take one back. */
	for (int round = 0; round < rounds; round++) {
		for (int i = 0; i < n_files; i++) {
			const char *path = t_path(dir, files[i].name);
			int r;

			while ((r = asyncload_worker_request(w, path)) == -EAGAIN) {
				CHECK(asyncload_worker_in_flight(w) + 0u <= o->queue_depth);
				CHECK_OK(t_get(w, &e));
				check_entry(dir, e);
				asyncload_entry_release(e);
				done++;
			}
			CHECK_OK(r);
			files[i].requested++;
			total++;
		}
	}
	while (done < total) {
		CHECK_OK(t_get(w, &e));
		check_entry(dir, e);
		asyncload_entry_release(e);
		done++;
	}
	for (int i = 0; i < n_files; i++)
		CHECK(files[i].completed == files[i].requested, "%s: %d of %d completed",
		      files[i].name, files[i].completed, files[i].requested);
	CHECK(asyncload_worker_in_flight(w) == 0);
	CHECK_RET(asyncload_worker_try_get(w, &e), -EAGAIN);

	asyncload_worker_free(w);
	asyncload_loader_free(l);
}

/* dispatch_n that can never be reached and idle_iters of days: either
 * refused up front or a lone request is still answered (nothing is held
 * forever). */
static void extreme_batching(const char *dir)
{
	struct asyncload_options o = t_opts(2, 1 << 20, 1);
	asyncload_loader *l = NULL;
	asyncload_worker *w = NULL;
	asyncload_entry *e;
	pid_t pid;

	o.dispatch_n = UINT32_MAX;
	o.idle_iters = UINT32_MAX;
	int r = asyncload_loader_new(&l, &o);
	if (r == -EINVAL)
		return;
	CHECK_OK(r);
	CHECK_OK(asyncload_loader_spawn(l, &pid));
	CHECK_OK(asyncload_worker_get(l, 0, &w));
	CHECK_OK(asyncload_worker_request(w, t_path(dir, files[1].name)));
	CHECK_OK(t_get(w, &e));
	CHECK_OK(asyncload_entry_error(e));
	asyncload_entry_release(e);
	asyncload_worker_free(w);
	asyncload_loader_free(l);
}

int main(void)
{
	static const uint64_t maxes[] = { 1u << 20, 300001 };
	const char *base;

	t_init("integrity");
	t_require_io_uring();
	base = t_tmpdir();

	for (size_t m = 0; m < sizeof(maxes) / sizeof(maxes[0]); m++) {
		char dir[4096];
		snprintf(dir, sizeof(dir), "%s/m%zu", base, m);
		CHECK(mkdir(dir, 0755) == 0);
		make_files(dir, maxes[m]);

		struct asyncload_options o = t_opts(16, maxes[m], 1);
		o.direct = false;
		run(dir, &o, 2);

		o.direct = true;
		run(dir, &o, 1);

		/* Batched submission: requests fewer than dispatch_n must
		 * still go out once the loader's polls bring nothing new. */
		o.direct = false;
		o.dispatch_n = 8;
		o.idle_iters = 4;
		o.queue_depth = 5;
		run(dir, &o, 1);
		if (m == 0)
			extreme_batching(dir);
	}
	printf("integrity: ok\n");
	return T_EXIT_PASS;
}
