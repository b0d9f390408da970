/* SPDX-License-Identifier: MIT */
/*
 * errors.c - every per-entry error comes back exactly once as that entry's
 * error, quickly, while good files in flight beside it still load:
 * missing (-ENOENT), directory (-EISDIR), FIFO / socket / character device
 * (-EINVAL, never opened, so never blocking), symlink loop (-ELOOP), a path
 * through a regular file (-ENOTDIR), unreadable file or directory (-EACCES).
 *
 * Permission checks mean nothing to root, so that part runs in a forked
 * child that drops to uid/gid 65534 and creates its own loader there.
 */
#define _GNU_SOURCE
#include "helpers.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

struct ecase {
	char path[4096];
	int err;
	uint64_t size, seed; /* for err == 0 */
	int seen;
};

static struct ecase cases[64];
static int n_cases;

static void add(const char *path, int err, uint64_t size, uint64_t seed)
{
	struct ecase *c = &cases[n_cases++];

	snprintf(c->path, sizeof(c->path), "%s", path);
	c->err = err;
	c->size = size;
	c->seed = seed;
	c->seen = 0;
}

/* Requests every case at once, with a good file after each, then collects
 * them in whatever order they complete. */
static void run_cases(asyncload_worker *w)
{
	asyncload_entry *e;
	int sent = 0;

	for (int i = 0; i < n_cases; i++) {
		CHECK_OK(asyncload_worker_request(w, cases[i].path));
		sent++;
	}
	for (int k = 0; k < sent; k++) {
		CHECK_OK(t_get(w, &e));
		const char *p = asyncload_entry_path(e);
		int i;
		for (i = 0; i < n_cases; i++)
			if (!cases[i].seen && !strcmp(cases[i].path, p))
				break;
		CHECK(i < n_cases, "unexpected or duplicate entry '%s'", p);
		cases[i].seen = 1;
		CHECK(asyncload_entry_error(e) == cases[i].err, "%s: error %d (%s), want %d (%s)", p,
		      asyncload_entry_error(e), asyncload_strerror(asyncload_entry_error(e)),
		      cases[i].err, asyncload_strerror(cases[i].err));
		if (!cases[i].err) {
			CHECK(asyncload_entry_size(e) == cases[i].size, "%s: size %llu", p,
			      (unsigned long long)asyncload_entry_size(e));
			CHECK(t_check_pattern(asyncload_entry_data(e), cases[i].size, cases[i].seed, 0), "%s", p);
		}
		asyncload_entry_release(e);
	}
	CHECK(asyncload_worker_in_flight(w) == 0);
	CHECK_RET(asyncload_worker_try_get(w, &e), -EAGAIN);
}

static int good_id;

static void add_good(const char *dir)
{
	char name[32];
	uint64_t size = 1000 + (uint64_t)good_id * 613;

	snprintf(name, sizeof(name), "good%d", good_id);
	add(t_write_file(dir, name, size, (uint64_t)good_id), 0, size, (uint64_t)good_id);
	good_id++;
}

static void type_errors(const char *dir)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int sock;

	n_cases = 0;
	add(t_path(dir, "missing"), -ENOENT, 0, 0);
	add_good(dir);
	add(t_path(dir, "missing-dir/file"), -ENOENT, 0, 0);
	CHECK(mkdir(t_path(dir, "adir"), 0755) == 0);
	add(t_path(dir, "adir"), -EISDIR, 0, 0);
	add("/", -EISDIR, 0, 0);
	add_good(dir);
	CHECK(mkfifo(t_path(dir, "fifo"), 0644) == 0);
	add(t_path(dir, "fifo"), -EINVAL, 0, 0);
	add_good(dir);

	/* A FIFO that has a writer: still not a regular file. */
	CHECK(mkfifo(t_path(dir, "fifo2"), 0644) == 0);
	int rfd = open(t_path(dir, "fifo2"), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
	int wfd = open(t_path(dir, "fifo2"), O_WRONLY | O_NONBLOCK | O_CLOEXEC);
	CHECK(rfd >= 0 && wfd >= 0);
	add(t_path(dir, "fifo2"), -EINVAL, 0, 0);

	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", t_path(dir, "sock"));
	sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	CHECK(sock >= 0 && bind(sock, (struct sockaddr *)&sa, sizeof(sa)) == 0);
	CHECK(listen(sock, 1) == 0);
	add(t_path(dir, "sock"), -EINVAL, 0, 0);
	add("/dev/zero", -EINVAL, 0, 0);
	add("/dev/null", -EINVAL, 0, 0);
	add_good(dir);

	CHECK(symlink("loop-b", t_path(dir, "loop-a")) == 0);
	CHECK(symlink("loop-a", t_path(dir, "loop-b")) == 0);
	CHECK(symlink("self", t_path(dir, "self")) == 0);
	add(t_path(dir, "loop-a"), -ELOOP, 0, 0);
	add(t_path(dir, "self"), -ELOOP, 0, 0);
	CHECK(symlink("fifo", t_path(dir, "link-to-fifo")) == 0);
	add(t_path(dir, "link-to-fifo"), -EINVAL, 0, 0);
	CHECK(symlink("good0", t_path(dir, "link-to-good")) == 0);
	add(t_path(dir, "link-to-good"), 0, 1000, 0);
	CHECK(symlink("does-not-exist", t_path(dir, "dangling")) == 0);
	add(t_path(dir, "dangling"), -ENOENT, 0, 0);
	add(t_path(dir, "good0/child"), -ENOTDIR, 0, 0);
	add_good(dir);

	struct asyncload_options o = t_opts(64, 1 << 20, 1);
	for (int direct = 0; direct < 2; direct++) {
		o.direct = direct;
		asyncload_loader *l = t_start(&o, NULL);
		asyncload_worker *w = NULL;
		CHECK_OK(asyncload_worker_get(l, 0, &w));
		run_cases(w);
		/* Twice more, so errors do not leave entries or fds behind. */
		for (int k = 0; k < n_cases; k++)
			cases[k].seen = 0;
		run_cases(w);
		asyncload_worker_free(w);
		asyncload_loader_free(l);
		for (int k = 0; k < n_cases; k++)
			cases[k].seen = 0;
	}

	/* Nobody holds the FIFO open for reading: a writer finds no reader. */
	int probe = open(t_path(dir, "fifo"), O_WRONLY | O_NONBLOCK | O_CLOEXEC);
	CHECK(probe < 0 && errno == ENXIO, "the loader left the FIFO open for reading");
	close(rfd);
	close(wfd);
	close(sock);
}

static void permission_errors(const char *dir)
{
	char sub[4096];

	n_cases = 0;
	snprintf(sub, sizeof(sub), "%s/perm", dir);
	CHECK(mkdir(sub, 0755) == 0);
	t_write_file(sub, "noread", 100, 1);
	CHECK(chmod(t_path(sub, "noread"), 0200) == 0);
	CHECK(mkdir(t_path(sub, "closed"), 0755) == 0);
	t_write_file(t_path(sub, "closed"), "inside", 100, 2);
	CHECK(chmod(t_path(sub, "closed"), 0600) == 0); /* no search permission */
	add(t_path(sub, "noread"), -EACCES, 0, 0);
	add(t_path(sub, "closed/inside"), -EACCES, 0, 0);
	add_good(sub);

	pid_t pid = fork();
	CHECK(pid >= 0);
	if (pid == 0) {
		if (geteuid() == 0) {
			/* Drop everything, or root's DAC override hides EACCES. */
			CHECK(setgroups(0, NULL) == 0);
			CHECK(setgid(65534) == 0);
			CHECK(setuid(65534) == 0);
			CHECK(geteuid() == 65534);
		}
		struct asyncload_options o = t_opts(8, 1 << 20, 1);
		asyncload_loader *l = t_start(&o, NULL);
		asyncload_worker *w = NULL;
		CHECK_OK(asyncload_worker_get(l, 0, &w));
		run_cases(w);
		asyncload_worker_free(w);
		asyncload_loader_free(l);
		_exit(0);
	}
	t_wait_child_ok(pid, "unprivileged child");
	/* Let the creator's cleanup remove what the child could not read. */
	chmod(t_path(sub, "closed"), 0755);
}

int main(void)
{
	const char *dir;

	t_init("errors");
	t_require_io_uring();
	dir = t_tmpdir();
	type_errors(dir);
	permission_errors(dir);
	printf("errors: ok\n");
	return T_EXIT_PASS;
}
