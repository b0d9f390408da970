/* SPDX-License-Identifier: MIT */
/*
 * direct_fallback.c - direct=true falls back to buffered reads where the
 * filesystem refuses O_DIRECT. Every other direct test reads a disk where
 * O_DIRECT works, so the fallback would never run there: this one loads
 * /proc/self/status (procfs refuses O_DIRECT at open) and a file on /dev/shm
 * when that is tmpfs, unconfined and confined (root=), whole and as a
 * range, and checks the bytes.
 */
#define _GNU_SOURCE
#include "helpers.h"

#include <fcntl.h>
#include <linux/magic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#define SHM_SIZE 10001

static char shm_dir[] = "/dev/shm/asyncload-direct-XXXXXX";
static const char *shm_file;

/* /dev/shm is not t_tmpdir()'s: remove it also when a check fails. */
static void remove_shm(void)
{
	if (shm_file)
		unlink(shm_file);
	rmdir(shm_dir);
}

static asyncload_entry *load(asyncload_worker *w, const char *path, uint64_t off, uint64_t len)
{
	asyncload_entry *e = NULL;
	CHECK_OK(asyncload_worker_submit(w, path, off, len, 0));
	CHECK_OK(t_get(w, &e));
	CHECK(asyncload_entry_error(e) == 0, "%s with direct=true: %s (O_DIRECT refused and no fallback?)",
	      path, asyncload_strerror(asyncload_entry_error(e)));
	return e;
}

/* /proc/self/status as the loader reads it: its own, so only the shape is
 * known, not the bytes. */
static void check_status(asyncload_worker *w, const char *path)
{
	asyncload_entry *e = load(w, path, 0, ASYNCLOAD_WHOLE_FILE);
	const char *d = asyncload_entry_data(e);
	uint64_t n = asyncload_entry_size(e);
	CHECK(n > 100 && memcmp(d, "Name:", 5) == 0 && memmem(d, n, "\nPid:", 5) && d[n - 1] == '\n',
	      "%s: %llu bytes that do not look like a status file", path, (unsigned long long)n);
	asyncload_entry_release(e);
	e = load(w, path, 2, 3);
	CHECK(asyncload_entry_size(e) == 3 && memcmp(asyncload_entry_data(e), "me:", 3) == 0,
	      "range of %s", path);
	asyncload_entry_release(e);
}

static void check_shm(asyncload_worker *w, const char *path)
{
	asyncload_entry *e = load(w, path, 0, ASYNCLOAD_WHOLE_FILE);
	CHECK(asyncload_entry_size(e) == SHM_SIZE);
	CHECK(t_check_pattern(asyncload_entry_data(e), SHM_SIZE, 5, 0));
	asyncload_entry_release(e);
	e = load(w, path, 4097, 3000); /* an offset O_DIRECT could not take as it is */
	CHECK(asyncload_entry_size(e) == 3000);
	CHECK(t_check_pattern(asyncload_entry_data(e), 3000, 5, 4097));
	asyncload_entry_release(e);
}

/* A direct=True loader (confined to root, or not) loads status_path (if any)
 * and each tmpfs name given, falling back to buffered reads where O_DIRECT is
 * refused. */
static void run(const char *root, const char *status_path, const char *shm1, const char *shm2)
{
	struct asyncload_options o = t_opts(4, 1 << 20, 1);
	o.direct = true;
	o.root = root;
	asyncload_loader *l = t_start(&o, NULL);
	asyncload_worker *w = NULL;
	CHECK_OK(asyncload_worker_get(l, 0, &w));
	if (status_path)
		check_status(w, status_path);
	if (shm1)
		check_shm(w, shm1);
	if (shm2)
		check_shm(w, shm2);
	asyncload_worker_free(w);
	asyncload_loader_free(l);
}

int main(void)
{
	t_init("direct_fallback");
	t_require_io_uring();

	/* A tmpfs file; newer kernels take O_DIRECT on tmpfs, older refuse it. */
	const char *shm_name = NULL;
	struct statfs sf;
	if (statfs("/dev/shm", &sf) == 0 && sf.f_type == TMPFS_MAGIC && mkdtemp(shm_dir)) {
		atexit(remove_shm);
		shm_file = strdup(t_write_file(shm_dir, "f", SHM_SIZE, 5));
		shm_name = "f";
	} else {
		printf("no tmpfs at /dev/shm: only procfs is tried\n");
	}

	run(NULL, "/proc/self/status", shm_file, NULL);
	run("/proc", "self/status", NULL, NULL);
	run("/proc", "/proc/self/status", NULL, NULL);
	if (shm_file) /* confined to the tmpfs directory: relative and absolute names */
		run(shm_dir, NULL, shm_name, shm_file);
	return T_EXIT_PASS;
}
