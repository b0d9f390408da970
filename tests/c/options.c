/* SPDX-License-Identifier: MIT */
/*
 * options.c - asyncload_options_init() gives the documented defaults;
 * asyncload_loader_new() refuses zero and out-of-limit values with -EINVAL
 * and accepts the limits themselves; get_options returns what was given;
 * destructors take NULL; strerror has a message for our errors.
 */
#define _GNU_SOURCE
#include "helpers.h"

#include <errno.h>
#include <string.h>

static void expect_new(struct asyncload_options o, int want, const char *what)
{
	asyncload_loader *l = NULL;
	int r = asyncload_loader_new(&l, &o);

	CHECK(r == want, "%s: loader_new returned %d (%s), want %d", what, r, asyncload_strerror(r), want);
	if (r == 0) {
		struct asyncload_options g;
		CHECK(l != NULL);
		CHECK_OK(asyncload_loader_get_options(l, &g));
		CHECK(g.queue_depth == o.queue_depth && g.n_workers == o.n_workers &&
		      g.max_file_size == o.max_file_size && g.dispatch_n == o.dispatch_n &&
		      g.idle_iters == o.idle_iters && g.direct == o.direct && g.root == NULL,
		      "%s: get_options differs", what);
		CHECK_RET(asyncload_loader_status(l), -EAGAIN);
		CHECK(asyncload_loader_free(l) == NULL);
	}
}

int main(void)
{
	struct asyncload_options d, o;

	t_init("options");
	memset(&d, 0xa5, sizeof(d));
	asyncload_options_init(&d);
	CHECK(d.queue_depth == 64 && d.max_file_size == 64ull << 20 && d.n_workers == 1 &&
	      d.dispatch_n == 1 && d.idle_iters == 0 && d.direct == false && d.root == NULL,
	      "defaults differ from the header");

	expect_new(d, 0, "defaults");

	o = d; o.queue_depth = 0;            expect_new(o, -EINVAL, "queue_depth 0");
	o = d; o.n_workers = 0;              expect_new(o, -EINVAL, "n_workers 0");
	o = d; o.max_file_size = 0;          expect_new(o, -EINVAL, "max_file_size 0");
	o = d; o.queue_depth = ASYNCLOAD_MAX_QUEUE_DEPTH + 1;
	o.max_file_size = 4096;              expect_new(o, -EINVAL, "queue_depth > max");
	o = d; o.n_workers = ASYNCLOAD_MAX_WORKERS + 1;
	o.queue_depth = 1; o.max_file_size = 4096;
	expect_new(o, -EINVAL, "n_workers > max");
	o = d; o.max_file_size = ASYNCLOAD_MAX_FILE_SIZE + 1;
	o.queue_depth = 1;                   expect_new(o, -EINVAL, "max_file_size > max");
	o = d; o.max_file_size = UINT64_MAX; o.queue_depth = 1;
	expect_new(o, -EINVAL, "max_file_size UINT64_MAX");
	/* Each within its limit, but too many entries together. */
	o = d; o.n_workers = 2 * ASYNCLOAD_MAX_ENTRIES / ASYNCLOAD_MAX_QUEUE_DEPTH;
	o.queue_depth = ASYNCLOAD_MAX_QUEUE_DEPTH; o.max_file_size = 4096;
	expect_new(o, -EINVAL, "n_workers * queue_depth > ASYNCLOAD_MAX_ENTRIES");
	o = d; o.queue_depth = UINT32_MAX; o.n_workers = UINT32_MAX; o.max_file_size = 4096;
	expect_new(o, -EINVAL, "product overflowing 32 bits");

	/* The limits themselves are fine (the region is only reserved). */
	o = d; o.queue_depth = ASYNCLOAD_MAX_QUEUE_DEPTH;
	o.n_workers = ASYNCLOAD_MAX_ENTRIES / ASYNCLOAD_MAX_QUEUE_DEPTH; o.max_file_size = 4096;
	expect_new(o, 0, "n_workers * queue_depth == ASYNCLOAD_MAX_ENTRIES");
	o = d; o.n_workers = ASYNCLOAD_MAX_WORKERS; o.queue_depth = 1; o.max_file_size = 4096;
	expect_new(o, 0, "n_workers == max");
	o = d; o.queue_depth = 1; o.max_file_size = ASYNCLOAD_MAX_FILE_SIZE;
	expect_new(o, 0, "max_file_size == max");
	o = d; o.queue_depth = 1; o.max_file_size = 1;
	expect_new(o, 0, "max_file_size 1");
	o = d; o.direct = true; o.dispatch_n = 16; o.idle_iters = 1000;
	expect_new(o, 0, "direct, batching");

	CHECK(asyncload_loader_free(NULL) == NULL);
	CHECK(asyncload_worker_free(NULL) == NULL);

	static const int errs[] = { -ENOENT, -EISDIR, -EINVAL, -EFBIG, -ELOOP, -EACCES, -EXDEV,
				    -ESHUTDOWN, -EAGAIN, -EBUSY, -ETIMEDOUT, -ENAMETOOLONG, -12345, 0 };
	for (size_t i = 0; i < sizeof(errs) / sizeof(errs[0]); i++) {
		const char *s = asyncload_strerror(errs[i]);
		CHECK(s && *s, "no message for %d", errs[i]);
	}
	CHECK(strcmp(asyncload_strerror(-ENOENT), asyncload_strerror(-EISDIR)) != 0);
	printf("options: ok\n");
	return T_EXIT_PASS;
}
