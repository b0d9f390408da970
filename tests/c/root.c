/* SPDX-License-Identifier: MIT */
/*
 * root.c - a loader confined with options.root serves files inside that
 * tree (relative paths are resolved against root, not the caller's working
 * directory; an absolute path is accepted when it lies inside root) and
 * refuses every way out with -EXDEV or -EACCES: "..",
 * an absolute path elsewhere, and symlinks (relative or absolute) that lead
 * outside. The outside file's bytes must never come back.
 */
#define _GNU_SOURCE
#include "helpers.h"

#include <errno.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static asyncload_worker *w;

static void expect_ok(const char *path, uint64_t size, uint64_t seed)
{
	asyncload_entry *e;

	CHECK_OK(asyncload_worker_request(w, path));
	CHECK_OK(t_get(w, &e));
	CHECK(asyncload_entry_error(e) == 0, "'%s' inside root: %d (%s)", path, asyncload_entry_error(e),
	      asyncload_strerror(asyncload_entry_error(e)));
	CHECK(asyncload_entry_size(e) == size && t_check_pattern(asyncload_entry_data(e), size, seed, 0),
	      "'%s': wrong content", path);
	asyncload_entry_release(e);
}

static void expect_refused(const char *path)
{
	asyncload_entry *e;

	CHECK_OK(asyncload_worker_request(w, path));
	CHECK_OK(t_get(w, &e));
	int err = asyncload_entry_error(e);
	CHECK(err == -EXDEV || err == -EACCES, "'%s' escapes root but got %d (%s), size %llu", path,
	      err, asyncload_strerror(err), (unsigned long long)asyncload_entry_size(e));
	asyncload_entry_release(e);
}

int main(void)
{
	char root[4096], outside[4096], sub[4096];
	const char *dir;

	t_init("root");
	t_require_io_uring();
	dir = t_tmpdir();
	snprintf(root, sizeof(root), "%s/root", dir);
	snprintf(sub, sizeof(sub), "%s/root/sub", dir);
	CHECK(mkdir(root, 0755) == 0 && mkdir(sub, 0755) == 0);
	t_write_file(root, "inside", 1000, 1);
	t_write_file(sub, "deep", 2000, 2);
	snprintf(outside, sizeof(outside), "%s", t_write_file(dir, "outside", 3000, 3));
	t_write_file(dir, "inside", 4000, 4); /* same name in the caller's cwd */
	CHECK(symlink("../outside", t_path(root, "escape")) == 0);
	CHECK(symlink(outside, t_path(root, "abs-escape")) == 0);
	CHECK(symlink("sub/deep", t_path(root, "inlink")) == 0);
	CHECK(symlink("../../outside", t_path(sub, "escape2")) == 0);
	CHECK(symlink("..", t_path(sub, "up")) == 0);

	for (int direct = 0; direct < 2; direct++) {
		struct asyncload_options o = t_opts(4, 1 << 20, 1);
		o.root = root;
		o.direct = direct;
		CHECK(chdir(dir) == 0);
		asyncload_loader *l = t_start(&o, NULL);
		CHECK_OK(asyncload_worker_get(l, 0, &w));

		expect_ok("inside", 1000, 1);         /* root's, not cwd's 4000-byte one */
		expect_ok("sub/deep", 2000, 2);
		expect_ok("sub/../inside", 1000, 1);
		expect_ok("./sub/./deep", 2000, 2);
		expect_ok("inlink", 2000, 2);
		expect_ok("sub/up/inside", 1000, 1);  /* a symlink that stays inside */
		/* An absolute path that names a file inside root is inside. */
		expect_ok(t_path(root, "inside"), 1000, 1);
		expect_ok(t_path(sub, "deep"), 2000, 2);

		expect_refused("../outside");
		expect_refused("sub/../../outside");
		expect_refused("sub/up/../outside");
		expect_refused(outside);
		expect_refused("/etc/passwd");
		expect_refused("escape");
		expect_refused("abs-escape");
		expect_refused("sub/escape2");

		/* A range request is confined just the same. */
		asyncload_entry *e;
		CHECK_OK(asyncload_worker_request_range(w, "../outside", 0, 10));
		CHECK_OK(t_get(w, &e));
		CHECK(asyncload_entry_error(e) == -EXDEV || asyncload_entry_error(e) == -EACCES,
		      "range escaping root: %d", asyncload_entry_error(e));
		asyncload_entry_release(e);

		asyncload_worker_free(w);
		asyncload_loader_free(l);
	}
	CHECK(chdir("/") == 0);
	printf("root: ok\n");
	return T_EXIT_PASS;
}
