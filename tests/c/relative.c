/* SPDX-License-Identifier: MIT */
/*
 * relative.c - relative paths are resolved against the requesting
 * process's working directory at request time, not the loader's (which is
 * deliberately somewhere else), and entries report the path as requested.
 * Two directories hold a file of the same name with different contents, so
 * resolving against the wrong directory cannot pass by accident.
 */
#define _GNU_SOURCE
#include "helpers.h"

#include <errno.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static void expect(asyncload_worker *w, const char *path, uint64_t size, uint64_t seed)
{
	asyncload_entry *e;

	CHECK_OK(asyncload_worker_request(w, path));
	CHECK_OK(t_get(w, &e));
	CHECK(!strcmp(asyncload_entry_path(e), path), "path '%s' reported as '%s'", path,
	      asyncload_entry_path(e));
	CHECK(asyncload_entry_error(e) == 0, "%s: %s", path, asyncload_strerror(asyncload_entry_error(e)));
	CHECK(asyncload_entry_size(e) == size, "%s: size %llu, want %llu", path,
	      (unsigned long long)asyncload_entry_size(e), (unsigned long long)size);
	CHECK(t_check_pattern(asyncload_entry_data(e), size, seed, 0), "%s: wrong file", path);
	asyncload_entry_release(e);
}

int main(void)
{
	char a[4096], b[4096], ldir[4096];
	const char *dir;

	t_init("relative");
	t_require_io_uring();
	dir = t_tmpdir();
	snprintf(a, sizeof(a), "%s/A", dir);
	snprintf(b, sizeof(b), "%s/B", dir);
	snprintf(ldir, sizeof(ldir), "%s/loader-cwd", dir);
	CHECK(mkdir(a, 0755) == 0 && mkdir(b, 0755) == 0 && mkdir(ldir, 0755) == 0);
	CHECK(mkdir(t_path(a, "sub"), 0755) == 0);
	t_write_file(a, "x", 1111, 1);
	t_write_file(b, "x", 2222, 2);
	t_write_file(ldir, "x", 3333, 3);
	t_write_file(t_path(a, "sub"), "y", 4444, 4);

	/* The loader's working directory has an "x" of its own. */
	CHECK(chdir(ldir) == 0);
	struct asyncload_options o = t_opts(4, 1 << 20, 2);
	asyncload_loader *l = t_start(&o, NULL);
	asyncload_worker *w = NULL;
	CHECK_OK(asyncload_worker_get(l, 0, &w));

	CHECK(chdir(a) == 0);
	expect(w, "x", 1111, 1);
	expect(w, "./x", 1111, 1);
	expect(w, "sub/y", 4444, 4);
	expect(w, "sub/../x", 1111, 1);
	expect(w, "../B/x", 2222, 2);

	CHECK(chdir(b) == 0);
	expect(w, "x", 2222, 2);
	expect(w, "../A/sub/y", 4444, 4);

	/* Requested from one directory, collected after moving to another. */
	asyncload_entry *e;
	CHECK_OK(asyncload_worker_request(w, "x"));
	CHECK(chdir(a) == 0);
	CHECK_OK(t_get(w, &e));
	CHECK_OK(asyncload_entry_error(e));
	CHECK(asyncload_entry_size(e) == 2222 && t_check_pattern(asyncload_entry_data(e), 2222, 2, 0),
	      "resolved at collection time instead of request time");
	asyncload_entry_release(e);

	/* A range with a relative path. */
	CHECK_OK(asyncload_worker_request_range(w, "sub/y", 100, 50));
	CHECK_OK(t_get(w, &e));
	CHECK_OK(asyncload_entry_error(e));
	CHECK(asyncload_entry_size(e) == 50 && t_check_pattern(asyncload_entry_data(e), 50, 4, 100));
	asyncload_entry_release(e);

	/* A worker in another process with its own working directory. */
	pid_t pid = fork();
	CHECK(pid >= 0);
	if (pid == 0) {
		asyncload_worker *cw = NULL;
		CHECK(chdir(b) == 0);
		CHECK_OK(asyncload_worker_get(l, 1, &cw));
		expect(cw, "x", 2222, 2);
		asyncload_worker_free(cw);
		_exit(0);
	}
	t_wait_child_ok(pid, "worker in B");

	asyncload_worker_free(w);
	asyncload_loader_free(l);
	CHECK(chdir("/") == 0);
	printf("relative: ok\n");
	return T_EXIT_PASS;
}
