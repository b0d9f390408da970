/* SPDX-License-Identifier: MIT */
/*
 * slowfs - a read-only FUSE mirror of a directory that answers slowly, to
 * emulate network storage (NFS, Lustre, s3fs, gcsfuse, ...) in tests and
 * benchmarks on a local machine.
 *
 *   slowfs [options] SOURCE MOUNTPOINT        (stays in the foreground)
 *   fusermount3 -u MOUNTPOINT                  (or SIGTERM/SIGINT: unmounts)
 *
 * Every lookup/getattr, open, read, opendir, readdir, readlink and statfs
 * sleeps --latency ms (plus a uniform 0..--jitter ms) in its own daemon
 * thread, so concurrent requests overlap as on a real network filesystem.
 * release and flush cost nothing (flush is not implemented: the kernel stops
 * sending it). Lookups in one directory run in parallel, as on NFS or an
 * object store (see writev() below).
 *
 * Options (numbers may be fractional where they are milliseconds):
 *   --latency=MS         added to each operation (default 0)
 *   --jitter=MS          plus a uniform random 0..MS on top (default 0)
 *   --eio-open=PATS      opens of matching files fail with EIO
 *   --eio-read=PATS      reads of matching files fail with EIO (open works)
 *   --einval-direct=PATS reads of matching files opened with O_DIRECT fail
 *                        with EINVAL (open works): a filesystem whose
 *                        O_DIRECT alignment is more than the reader's
 *   --stall=PATS         opens of matching files wait until the release file
 *                        exists (checked every 2 ms); removing it re-arms
 *                        the stall for later opens. Unmounting or SIGTERM
 *                        ends a stalled open with EIO.
 *   --release-file=PATH  default SOURCE/.slowfs-release
 *   --max-answer=BYTES   each read answer carries at most BYTES (short reads);
 *                        files are then opened with direct_io so that read(2)
 *                        returns the short count to the reader instead of the
 *                        kernel taking it for the end of the file
 *   --threads=N          most daemon threads (default 1024; libfuse >= 3.12,
 *                        older libfuse has no cap); none are ever retired
 *   --max-background=N   kernel background (readahead/async) request limit,
 *                        raised from the kernel's 12 (default 1024)
 *   --stats=FILE         JSON op counters, rewritten every 50 ms and at exit:
 *                        {"getattr": n, "open": n, "read": n, ...,
 *                         "stalled_now": n} (a test waits on stalled_now)
 *   -h, --help           this text and libfuse's options (-d, -o ...)
 *
 * PATS is a ':'-separated list of fnmatch(3) patterns, each matched against
 * the path inside the mount ("/c001/x.bin") and against the base name.
 * The high-level API answers the kernel's LOOKUP with getattr, so "getattr"
 * in the stats counts both.
 */
#ifndef FUSE_USE_VERSION
#define FUSE_USE_VERSION 32 /* the loop config struct; 312 where libfuse has the setters */
#endif
#define _GNU_SOURCE
#include <fuse.h>
#include <fuse_lowlevel.h>
#include <linux/fuse.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

struct options {
	char *latency, *jitter, *eio_open, *eio_read, *einval_direct, *stall, *release_file;
	char *max_answer, *threads, *max_background, *stats;
	int help;
};

/* set in fh (beside the descriptor) for an open whose reads answer EINVAL */
#define FH_EINVAL (1ull << 62)

#define OPT(t, f) { t, offsetof(struct options, f), 1 }
static const struct fuse_opt option_spec[] = {
	OPT("--latency=%s", latency),
	OPT("--jitter=%s", jitter),
	OPT("--eio-open=%s", eio_open),
	OPT("--eio-read=%s", eio_read),
	OPT("--einval-direct=%s", einval_direct),
	OPT("--stall=%s", stall),
	OPT("--release-file=%s", release_file),
	OPT("--max-answer=%s", max_answer),
	OPT("--threads=%s", threads),
	OPT("--max-background=%s", max_background),
	OPT("--stats=%s", stats),
	OPT("-h", help),
	OPT("--help", help),
	FUSE_OPT_END,
};

enum op { OP_GETATTR, OP_OPEN, OP_READ, OP_OPENDIR, OP_READDIR, OP_READLINK, OP_STATFS,
          OP_EIO, OP_STALLS, N_OPS };
static const char *const op_names[N_OPS] = {
	"getattr", "open", "read", "opendir", "readdir", "readlink", "statfs",
	"eio", "stalls",
};

static struct {
	int root;              /* SOURCE, opened once: every path is relative to it */
	char *source;
	long latency_ns, jitter_ns;
	char *eio_open, *eio_read, *einval_direct, *stall, *release_file, *stats;
	size_t max_answer;     /* 0: whole answers */
	unsigned threads, max_background;
	atomic_ulong ops[N_OPS];
	atomic_long stalled_now;
	atomic_bool done;
} g;

static _Thread_local uint64_t rng_state;

/* xorshift64*: per thread, so jitter needs no lock */
static uint64_t rng_next(void)
{
	if (!rng_state)
		rng_state = (uint64_t)(uintptr_t)&rng_state ^ (uint64_t)time(NULL) ^ 0x9e3779b97f4a7c15ull;
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * 2685821657736338717ull;
}

static void pause_op(enum op op)
{
	atomic_fetch_add_explicit(&g.ops[op], 1, memory_order_relaxed);
	long ns = g.latency_ns;
	if (g.jitter_ns)
		ns += (long)(rng_next() % (uint64_t)(g.jitter_ns + 1));
	if (ns <= 0)
		return;
	struct timespec ts = { ns / 1000000000L, ns % 1000000000L };
	while (clock_nanosleep(CLOCK_MONOTONIC, 0, &ts, &ts) == EINTR)
		;
}

static bool matches(const char *pats, const char *path)
{
	if (!pats)
		return false;
	const char *base = strrchr(path, '/');
	base = base ? base + 1 : path;
	char pat[PATH_MAX];
	for (const char *p = pats; *p;) {
		size_t n = strcspn(p, ":");
		if (n && n < sizeof pat) {
			memcpy(pat, p, n);
			pat[n] = '\0';
			if (!fnmatch(pat, path, 0) || !fnmatch(pat, base, 0))
				return true;
		}
		p += n;
		if (*p == ':')
			p++;
	}
	return false;
}

/* "/a/b" -> "a/b", "/" -> "." : relative to g.root */
static const char *rel(const char *path)
{
	while (*path == '/')
		path++;
	return *path ? path : ".";
}

static bool exiting(void)
{
	struct fuse_context *ctx = fuse_get_context();
	return atomic_load(&g.done) || (ctx && ctx->fuse && fuse_session_exited(fuse_get_session(ctx->fuse)));
}

static int wait_for_release(void)
{
	atomic_fetch_add(&g.ops[OP_STALLS], 1);
	atomic_fetch_add(&g.stalled_now, 1);
	int err = 0;
	while (access(g.release_file, F_OK) != 0) {
		if (exiting()) {
			err = -EIO;
			break;
		}
		/* a reader killed while it waits: free this thread */
		if (fuse_interrupted()) {
			err = -EINTR;
			break;
		}
		struct timespec ts = { 0, 2 * 1000 * 1000 };
		nanosleep(&ts, NULL);
	}
	atomic_fetch_sub(&g.stalled_now, 1);
	return err;
}

/*
 * Parallel lookups. Without FUSE_PARALLEL_DIROPS in the INIT reply the
 * kernel serialises every lookup in one directory on a mutex (wchan
 * fuse_lock_inode), so on a cold mount a directory of files opens one file
 * per latency however many readers wait: a harness cap no NFS or object
 * store has. libfuse 3.14 (Debian 12) asks for the capability but leaves the
 * flag out of its reply, so the reply is amended here on its way to the
 * kernel: the daemon's first write to /dev/fuse is always the INIT reply
 * (the kernel sends nothing else before it is answered). A definition of
 * writev() in the program takes the place of libc's for libfuse too.
 */
static atomic_bool init_replied;

ssize_t writev(int fd, const struct iovec *iov, int iovcnt)
{
	if (!atomic_load_explicit(&init_replied, memory_order_relaxed) && iovcnt >= 2 &&
	    iov[0].iov_len == sizeof(struct fuse_out_header) &&
	    iov[1].iov_len >= offsetof(struct fuse_init_out, flags) + sizeof(uint32_t) &&
	    !atomic_exchange(&init_replied, true)) {
		const struct fuse_out_header *h = iov[0].iov_base;
		if (h->error == 0)
			((struct fuse_init_out *)iov[1].iov_base)->flags |= FUSE_PARALLEL_DIROPS;
	}
	return syscall(SYS_writev, fd, iov, iovcnt);
}

static void *sfs_init(struct fuse_conn_info *conn, struct fuse_config *cfg)
{
	(void)cfg;
	/* the kernel's default of 12 background requests would make readahead
	 * of hundreds of files queue in the kernel instead of overlapping here */
	conn->max_background = g.max_background;
	conn->congestion_threshold = g.max_background * 3 / 4;
	return NULL;
}

static int sfs_getattr(const char *path, struct stat *st, struct fuse_file_info *fi)
{
	pause_op(OP_GETATTR);
	int r = fi ? fstat((int)(fi->fh & ~FH_EINVAL), st) : fstatat(g.root, rel(path), st, AT_SYMLINK_NOFOLLOW);
	if (r)
		return -errno;
	st->st_mode &= ~(mode_t)0222; /* read-only mirror */
	return 0;
}

static int sfs_readlink(const char *path, char *buf, size_t size)
{
	pause_op(OP_READLINK);
	if (!size)
		return -EINVAL;
	ssize_t n = readlinkat(g.root, rel(path), buf, size - 1);
	if (n < 0)
		return -errno;
	buf[n] = '\0';
	return 0;
}

static int sfs_open(const char *path, struct fuse_file_info *fi)
{
	if ((fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & O_TRUNC))
		return -EROFS;
	pause_op(OP_OPEN);
	if (matches(g.eio_open, path)) {
		atomic_fetch_add(&g.ops[OP_EIO], 1);
		return -EIO;
	}
	if (matches(g.stall, path)) {
		int err = wait_for_release();
		if (err)
			return err;
	}
	int fd = openat(g.root, rel(path), O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	/* fi->flags is only given to open: the refusal is decided here, kept in fh */
	fi->fh = (uint64_t)fd | ((fi->flags & O_DIRECT) && matches(g.einval_direct, path) ? FH_EINVAL : 0);
	fi->direct_io = g.max_answer != 0;
	return 0;
}

static int sfs_read(const char *path, char *buf, size_t size, off_t off, struct fuse_file_info *fi)
{
	pause_op(OP_READ);
	if (matches(g.eio_read, path)) {
		atomic_fetch_add(&g.ops[OP_EIO], 1);
		return -EIO;
	}
	if (fi->fh & FH_EINVAL)
		return -EINVAL;
	if (g.max_answer && size > g.max_answer)
		size = g.max_answer;
	ssize_t n = pread((int)(fi->fh & ~FH_EINVAL), buf, size, off);
	return n < 0 ? -errno : (int)n;
}

static int sfs_release(const char *path, struct fuse_file_info *fi)
{
	(void)path;
	close((int)(fi->fh & ~FH_EINVAL));
	return 0;
}

static int sfs_statfs(const char *path, struct statvfs *st)
{
	(void)path;
	pause_op(OP_STATFS);
	return fstatvfs(g.root, st) ? -errno : 0;
}

static int sfs_opendir(const char *path, struct fuse_file_info *fi)
{
	pause_op(OP_OPENDIR);
	int fd = openat(g.root, rel(path), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	DIR *d = fdopendir(fd);
	if (!d) {
		int err = -errno;
		close(fd);
		return err;
	}
	fi->fh = (uint64_t)(uintptr_t)d;
	return 0;
}

static int sfs_readdir(const char *path, void *buf, fuse_fill_dir_t fill, off_t off,
                       struct fuse_file_info *fi, enum fuse_readdir_flags flags)
{
	(void)path;
	(void)off;
	(void)flags;
	pause_op(OP_READDIR);
	DIR *d = (DIR *)(uintptr_t)fi->fh;
	/* offset 0 to the filler: libfuse keeps the whole listing, so one call
	 * per opendir answers every later offset */
	rewinddir(d);
	struct dirent *e;
	errno = 0;
	while ((e = readdir(d))) {
		struct stat st = { .st_ino = e->d_ino, .st_mode = (mode_t)DTTOIF(e->d_type) };
		if (fill(buf, e->d_name, &st, 0, 0))
			break;
	}
	return errno ? -errno : 0;
}

static int sfs_releasedir(const char *path, struct fuse_file_info *fi)
{
	(void)path;
	closedir((DIR *)(uintptr_t)fi->fh);
	return 0;
}

static const struct fuse_operations ops = {
	.init = sfs_init,
	.getattr = sfs_getattr,
	.readlink = sfs_readlink,
	.open = sfs_open,
	.read = sfs_read,
	.release = sfs_release,
	.statfs = sfs_statfs,
	.opendir = sfs_opendir,
	.readdir = sfs_readdir,
	.releasedir = sfs_releasedir,
};

static void write_stats(void)
{
	if (!g.stats)
		return;
	char tmp[PATH_MAX];
	if (snprintf(tmp, sizeof tmp, "%s.tmp", g.stats) >= (int)sizeof tmp)
		return;
	FILE *f = fopen(tmp, "w");
	if (!f)
		return;
	fputc('{', f);
	for (int i = 0; i < N_OPS; i++)
		fprintf(f, "\"%s\": %lu, ", op_names[i], atomic_load(&g.ops[i]));
	fprintf(f, "\"stalled_now\": %ld}\n", atomic_load(&g.stalled_now));
	if (fclose(f) == 0)
		rename(tmp, g.stats);
}

static void *stats_thread(void *arg)
{
	(void)arg;
	while (!atomic_load(&g.done)) {
		write_stats();
		struct timespec ts = { 0, 50 * 1000 * 1000 };
		nanosleep(&ts, NULL);
	}
	return NULL;
}

/* the first non-option argument is SOURCE; the next one is left to libfuse */
static int opt_proc(void *data, const char *arg, int key, struct fuse_args *outargs)
{
	(void)data;
	(void)outargs;
	if (key == FUSE_OPT_KEY_NONOPT && !g.source) {
		g.source = strdup(arg);
		return 0;
	}
	return 1;
}

static int parse_ms(const char *s, const char *name, long *ns)
{
	if (!s)
		return 0;
	char *end;
	double ms = strtod(s, &end);
	if (end == s || *end || ms < 0 || ms > 1e6) {
		fprintf(stderr, "slowfs: %s: not a number of milliseconds: %s\n", name, s);
		return -1;
	}
	*ns = (long)(ms * 1e6 + 0.5);
	return 0;
}

static int parse_count(const char *s, const char *name, unsigned long max, unsigned long *v)
{
	if (!s)
		return 0;
	char *end;
	errno = 0;
	unsigned long n = strtoul(s, &end, 10);
	if (end == s || *end || errno || n == 0 || n > max) {
		fprintf(stderr, "slowfs: %s: expected 1..%lu, got %s\n", name, max, s);
		return -1;
	}
	*v = n;
	return 0;
}

static void usage(const char *prog)
{
	printf("usage: %s [options] SOURCE MOUNTPOINT\n"
	       "A read-only FUSE mirror of SOURCE that sleeps in every operation.\n\n"
	       "  --latency=MS         added to each lookup/getattr, open, read, readdir, ...\n"
	       "  --jitter=MS          plus a uniform random 0..MS\n"
	       "  --eio-open=PATS      opens of matching files fail with EIO\n"
	       "  --eio-read=PATS      reads of matching files fail with EIO\n"
	       "  --einval-direct=PATS O_DIRECT reads of matching files fail with EINVAL\n"
	       "  --stall=PATS         opens of matching files wait until the release file exists\n"
	       "  --release-file=PATH  default SOURCE/.slowfs-release\n"
	       "  --max-answer=BYTES   each read answers at most BYTES (short reads; direct_io)\n"
	       "  --threads=N          most daemon threads (default 1024, libfuse >= 3.12)\n"
	       "  --max-background=N   kernel background request limit (default 1024)\n"
	       "  --stats=FILE         JSON op counters, rewritten every 50 ms and at exit\n"
	       "PATS: ':'-separated fnmatch(3) patterns on the path in the mount or the base name.\n"
	       "Runs in the foreground; unmount with fusermount3 -u MOUNTPOINT or SIGTERM.\n\n",
	       prog);
}

int main(int argc, char *argv[])
{
	struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
	struct options o = { 0 };
	if (fuse_opt_parse(&args, &o, option_spec, opt_proc) == -1)
		return 1;
	struct fuse_cmdline_opts co;
	if (fuse_parse_cmdline(&args, &co) != 0)
		return 1;
	if (o.help || co.show_help) {
		usage(argv[0]);
		fuse_cmdline_help();
		fuse_lib_help(&args);
		return 0;
	}
	if (co.show_version) {
		printf("slowfs on libfuse %s\n", fuse_pkgversion());
		return 0;
	}
	if (!g.source || !co.mountpoint) {
		usage(argv[0]);
		return 1;
	}

	unsigned long answer = 0, threads = 1024, background = 1024;
	if (parse_ms(o.latency, "--latency", &g.latency_ns) ||
	    parse_ms(o.jitter, "--jitter", &g.jitter_ns) ||
	    parse_count(o.max_answer, "--max-answer", 1ul << 30, &answer) ||
	    parse_count(o.threads, "--threads", 100000, &threads) ||
	    parse_count(o.max_background, "--max-background", 65535, &background))
		return 1;
	g.max_answer = answer;
	g.threads = (unsigned)threads;
	g.max_background = (unsigned)background;
	g.eio_open = o.eio_open;
	g.eio_read = o.eio_read;
	g.einval_direct = o.einval_direct;
	g.stall = o.stall;
	g.stats = o.stats;
	if (o.release_file) {
		g.release_file = o.release_file;
	} else if (asprintf(&g.release_file, "%s/.slowfs-release", g.source) < 0) {
		return 1;
	}
	g.root = open(g.source, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (g.root < 0) {
		fprintf(stderr, "slowfs: %s: %s\n", g.source, strerror(errno));
		return 1;
	}
	/* sleeps of a fraction of a ms must not be stretched by the 50 us
	 * default timer slack; threads libfuse starts later inherit this */
	prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);

	struct fuse *f = fuse_new(&args, &ops, sizeof ops, NULL);
	if (!f)
		return 1;
	int ret = 1;
	if (fuse_mount(f, co.mountpoint) != 0)
		goto out_destroy;
	if (fuse_set_signal_handlers(fuse_get_session(f)) != 0)
		goto out_unmount;
	pthread_t st;
	bool have_stats = g.stats && pthread_create(&st, NULL, stats_thread, NULL) == 0;

#if FUSE_USE_VERSION >= 312
	struct fuse_loop_config *lc = fuse_loop_cfg_create();
	fuse_loop_cfg_set_clone_fd(lc, (unsigned)co.clone_fd);
	fuse_loop_cfg_set_max_threads(lc, g.threads);
	/* thread churn under bursts costs more than idle stacks */
	fuse_loop_cfg_set_idle_threads(lc, g.threads);
	ret = co.singlethread ? fuse_loop(f) : fuse_loop_mt(f, lc);
	fuse_loop_cfg_destroy(lc);
#else
	struct fuse_loop_config lc = { .clone_fd = co.clone_fd, .max_idle_threads = g.threads };
	ret = co.singlethread ? fuse_loop(f) : fuse_loop_mt(f, &lc);
#endif
	atomic_store(&g.done, true);
	if (have_stats)
		pthread_join(st, NULL);
	write_stats();
	fuse_remove_signal_handlers(fuse_get_session(f));
out_unmount:
	fuse_unmount(f);
out_destroy:
	fuse_destroy(f);
	free(co.mountpoint);
	fuse_opt_free_args(&args);
	close(g.root);
	return ret ? 1 : 0;
}
