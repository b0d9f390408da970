/* SPDX-License-Identifier: MIT */
/*
 * helpers.c - implementation of the shared C test helpers (see helpers.h).
 */
#define _GNU_SOURCE
#include "helpers.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <liburing.h>
#include <signal.h>
#include <stdarg.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

const char *t_name = "test";

static char tmpdir_buf[4096];
static pid_t tmpdir_owner;

static __attribute__((noreturn)) void vfail(const char *file, int line, const char *cond, const char *fmt, va_list ap)
{
	fprintf(stderr, "%s[%d]: FAIL %s:%d: ", t_name, (int)getpid(), file, line);
	if (cond)
		fprintf(stderr, "CHECK(%s)", cond);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	fflush(stderr);
	exit(T_EXIT_FAIL);
}

void t_fail(const char *file, int line, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vfail(file, line, NULL, fmt, ap);
}

void t_check_failed(const char *file, int line, const char *cond, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vfail(file, line, cond, fmt, ap);
}

void t_init(const char *name)
{
	t_name = name;
	/* Messages from forked children must not be lost or duplicated. */
	setvbuf(stdout, NULL, _IONBF, 0);
	setvbuf(stderr, NULL, _IONBF, 0);
}

void t_require_io_uring(void)
{
	struct io_uring ring;
	int r = io_uring_queue_init(4, &ring, 0);

	if (r < 0) {
		fprintf(stderr, "%s: io_uring unavailable (%s), skipping\n", t_name, strerror(-r));
		exit(T_EXIT_SKIP);
	}
	io_uring_queue_exit(&ring);
}

static int rm_one(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
	(void)st;
	(void)ftw;
	if (type == FTW_DP)
		rmdir(path);
	else
		unlink(path);
	return 0;
}

static void tmpdir_cleanup(void)
{
	/* atexit handlers also run in forked children that call exit(); only
	 * the creator may remove the tree the others are still using. */
	if (tmpdir_buf[0] && getpid() == tmpdir_owner && !getenv("ASYNCLOAD_TEST_KEEP"))
		nftw(tmpdir_buf, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

const char *t_tmpdir(void)
{
	const char *base = getenv("ASYNCLOAD_TEST_DIR");

	if (tmpdir_buf[0])
		return tmpdir_buf;
	if (!base || !*base)
		base = "/var/tmp";
	snprintf(tmpdir_buf, sizeof(tmpdir_buf), "%s/asyncload-%s-XXXXXX", base, t_name);
	if (!mkdtemp(tmpdir_buf))
		t_fail(__FILE__, __LINE__, "mkdtemp(%s): %s", tmpdir_buf, strerror(errno));
	/* Tests that drop to an unprivileged user read files in here. */
	chmod(tmpdir_buf, 0755);
	tmpdir_owner = getpid();
	atexit(tmpdir_cleanup);
	return tmpdir_buf;
}

const char *t_path(const char *dir, const char *name)
{
	static char bufs[8][4096];
	static unsigned next;
	char *b = bufs[next++ % 8];

	snprintf(b, sizeof(bufs[0]), "%s/%s", dir, name);
	return b;
}

const char *t_write_file(const char *dir, const char *name, uint64_t size, uint64_t seed)
{
	const char *path = t_path(dir, name);
	uint8_t buf[65536];
	uint64_t off = 0;
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);

	if (fd < 0)
		t_fail(__FILE__, __LINE__, "open(%s): %s", path, strerror(errno));
	while (off < size) {
		size_t n = size - off < sizeof(buf) ? (size_t)(size - off) : sizeof(buf);

		for (size_t i = 0; i < n; i++)
			buf[i] = t_pattern(seed, off + i);
		ssize_t w = write(fd, buf, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			t_fail(__FILE__, __LINE__, "write(%s): %s", path, strerror(errno));
		off += (uint64_t)w;
	}
	close(fd);
	return path;
}

void *t_read_file(const char *path, uint64_t *size)
{
	struct stat st;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	uint8_t *buf;
	uint64_t off = 0;

	if (fd < 0)
		return NULL;
	if (fstat(fd, &st) < 0) {
		close(fd);
		return NULL;
	}
	buf = malloc((size_t)st.st_size + 1);
	if (!buf)
		t_fail(__FILE__, __LINE__, "out of memory");
	for (;;) {
		ssize_t r = read(fd, buf + off, (size_t)st.st_size + 1 - off);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			t_fail(__FILE__, __LINE__, "read(%s): %s", path, strerror(errno));
		if (r == 0)
			break;
		off += (uint64_t)r;
	}
	close(fd);
	*size = off;
	return buf;
}

bool t_check_pattern(const void *data, uint64_t size, uint64_t seed, uint64_t offset)
{
	const uint8_t *p = data;

	for (uint64_t i = 0; i < size; i++) {
		if (p[i] != t_pattern(seed, offset + i)) {
			fprintf(stderr, "%s: pattern mismatch at byte %llu of %llu (seed %llu, offset %llu): "
				"got 0x%02x want 0x%02x\n", t_name, (unsigned long long)i,
				(unsigned long long)size, (unsigned long long)seed,
				(unsigned long long)offset, p[i], t_pattern(seed, offset + i));
			return false;
		}
	}
	return true;
}

uint64_t t_rand(void)
{
	static uint64_t s = 0x2545F4914F6CDD1Dull;

	s ^= s << 13;
	s ^= s >> 7;
	s ^= s << 17;
	return s;
}

struct asyncload_options t_opts(uint32_t depth, uint64_t max_size, uint32_t n_workers)
{
	struct asyncload_options o;

	asyncload_options_init(&o);
	o.queue_depth = depth;
	o.max_file_size = max_size;
	o.n_workers = n_workers;
	return o;
}

asyncload_loader *t_start(const struct asyncload_options *o, pid_t *pid)
{
	asyncload_loader *l = NULL;
	pid_t p = 0;

	CHECK_OK(asyncload_loader_new(&l, o));
	CHECK(l != NULL);
	CHECK_OK(asyncload_loader_spawn(l, &p));
	CHECK(p > 0, "spawn gave pid %d", (int)p);
	CHECK_OK(asyncload_loader_status(l));
	if (pid)
		*pid = p;
	return l;
}

int t_get(asyncload_worker *w, asyncload_entry **e)
{
	int r;

	do {
		*e = NULL;
		r = asyncload_worker_wait_get(w, e, T_WAIT_MS);
	} while (r == -EINTR);
	if (r == -ETIMEDOUT)
		t_fail(__FILE__, __LINE__, "no entry within %d ms (%u in flight): hang",
		       T_WAIT_MS, asyncload_worker_in_flight(w));
	if (r == 0 && !*e)
		t_fail(__FILE__, __LINE__, "wait_get returned 0 but no entry");
	return r;
}

int64_t t_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int fds_in(pid_t pid);

int t_count_fds(void)
{
	return fds_in(getpid()) - 1; /* less the listing's own descriptor */
}

long t_proc_status_kb(pid_t pid, const char *field)
{
	char path[64], line[256];
	size_t flen = strlen(field);
	long v = -1;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	f = fopen(path, "re");
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f)) {
		if (!strncmp(line, field, flen)) {
			v = strtol(line + flen, NULL, 10);
			break;
		}
	}
	fclose(f);
	return v;
}

void t_wait_child_ok(pid_t pid, const char *what)
{
	int st = t_wait_child_timeout(pid, 60000);

	if (st == -1)
		t_fail(__FILE__, __LINE__, "%s (pid %d) did not exit within 60 s", what, (int)pid);
	if (WIFSIGNALED(st))
		t_fail(__FILE__, __LINE__, "%s (pid %d) killed by signal %d", what, (int)pid, WTERMSIG(st));
	if (WEXITSTATUS(st) != 0)
		t_fail(__FILE__, __LINE__, "%s (pid %d) exited with %d", what, (int)pid, WEXITSTATUS(st));
}

int t_wait_child_timeout(pid_t pid, int ms)
{
	int64_t end = t_now_ms() + ms;
	int st;

	for (;;) {
		pid_t r = waitpid(pid, &st, WNOHANG);
		if (r == pid)
			return st;
		if (r < 0 && errno != EINTR)
			t_fail(__FILE__, __LINE__, "waitpid(%d): %s", (int)pid, strerror(errno));
		if (t_now_ms() >= end) {
			kill(pid, SIGKILL);
			waitpid(pid, &st, 0);
			return -1;
		}
		usleep(5000);
	}
}


int t_settled_fds_of(pid_t pid)
{
	int last = fds_in(pid), same = 0;
	for (int i = 0; i < 200 && same < 3; i++) {
		usleep(10000);
		int n = fds_in(pid);
		same = n == last ? same + 1 : 0;
		last = n;
	}
	return last;
}

static int fds_in(pid_t pid)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
	DIR *d = opendir(path);
	CHECK(d != NULL, "opendir(%s)", path);
	int n = 0;
	struct dirent *de;
	while ((de = readdir(d)))
		n += de->d_name[0] != '.';
	closedir(d);
	return n;
}

pid_t t_kill_later(pid_t target, int sig, int ms)
{
	pid_t pid = fork();

	CHECK(pid >= 0);
	if (pid == 0) {
		usleep((useconds_t)ms * 1000);
		_exit(kill(target, sig) == 0 ? 0 : 1);
	}
	return pid;
}

int64_t t_wait_through_kill(pid_t lpid, int (*wait)(asyncload_worker *w), asyncload_worker *w,
                            const char *what)
{
	pid_t killer = t_kill_later(lpid, SIGKILL, 200);
	int64_t t0 = t_now_ms();
	int r;

	do
		r = wait(w);
	while (r == -EINTR);
	int64_t dt = t_now_ms() - t0;
	t_wait_child_ok(killer, "killer");
	CHECK_RET(r, -ESHUTDOWN);
	/* 200 ms until the kill, then "within a second" with slack for
	 * sanitizers and a loaded machine: a miss here means polling is
	 * missing, not that it is slow. */
	printf("%s: %s noticed the kill after %lld ms (kill at 200 ms)\n", t_name, what,
	       (long long)dt);
	CHECK(dt < 2500, "%s: death of the loader noticed after %lld ms", what, (long long)dt);
	return dt;
}
