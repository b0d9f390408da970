/* SPDX-License-Identifier: MIT */
/*
 * uring_ceiling.c - the speed limit asyncload is measured against.
 *
 * Reads every file named in a list (one path per line, from a file or stdin) with io_uring and
 * nothing else: no IPC, no Python, no copies. Each file is one linked chain
 *     openat (into a direct descriptor) -> read (whole file, one buffer) -> close
 * and up to -d chains are in flight. Prints {"files", "bytes", "seconds", ...} as JSON on stdout.
 *
 *   cc -O2 -o uring_ceiling tools/uring_ceiling.c -luring -lpthread
 *   ./uring_ceiling -d 64 list.txt        # -t 2: two threads, a ring each
 *
 * Depth 1 is kept on purpose: when every page is cached the ops complete inline at submit time,
 * and a single chain in flight avoids all io-wq and completion batching overhead.
 * bench.py builds this itself, so it does not depend on the project's build.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

enum { OP_OPEN, OP_READ, OP_CLOSE, OP_STATX };

struct slot {
	void   *buf;
	int     left;      /* CQEs of this chain still to come */
	int     open_res;
	size_t  path;      /* index into the list, for error messages */
	struct statx stx;
};

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void die(const char *what, int err)
{
	fprintf(stderr, "uring_ceiling: %s: %s\n", what, strerror(err < 0 ? -err : err));
	exit(2);
}

/* What every reader thread shares: the list and a cursor into it. */
struct run {
	char      **paths;
	size_t      n;
	atomic_size_t next;
	unsigned    depth;
	size_t      max_size;
	int         oflags;
	int         quiet;
	int         async;   /* IOSQE_ASYNC on reads: copies run on io-wq threads, any core */
	int         statx;   /* a STATX of the path before each chain, as a loader that must
	                        refuse FIFOs and devices before opening them does */
	atomic_uint shown;   /* a wrong list should not flood the terminal: show the first 10 */
};

/* One thread, one ring, its own slots: threads share nothing but the cursor. */
struct reader {
	struct run     *run;
	struct io_uring ring;
	struct slot    *slots;
	unsigned       *free_slots;
	unsigned        n_free, in_flight;
	uint64_t        bytes;
	size_t          errors;
};

static void reader_setup(struct reader *r)
{
	unsigned depth = r->run->depth;
	/* three SQEs per chain; the CQ is sized by the kernel at twice the SQ */
	int ret = io_uring_queue_init(depth * 3, &r->ring, 0);
	if (ret < 0)
		die("io_uring_queue_init", ret);
	ret = io_uring_register_files_sparse(&r->ring, depth);
	if (ret < 0)
		die("io_uring_register_files_sparse", ret);
	/* one buffer per slot, reserved but not committed: only pages a read lands on count */
	r->slots = calloc(depth, sizeof(*r->slots));
	r->free_slots = malloc(depth * sizeof(*r->free_slots));
	for (unsigned i = 0; i < depth; i++) {
		r->slots[i].buf = mmap(NULL, r->run->max_size, PROT_READ | PROT_WRITE,
				       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
		if (r->slots[i].buf == MAP_FAILED)
			die("mmap", errno);
		r->free_slots[i] = depth - 1 - i;
	}
	r->n_free = depth;
}

static void report(struct run *run, const char *op, size_t path, const char *msg)
{
	if (!run->quiet && atomic_fetch_add(&run->shown, 1) < 10)
		fprintf(stderr, "uring_ceiling: %s %s: %s\n", op, run->paths[path], msg);
}

/* openat (direct slot s) -> read -> close, linked: one submit per file. */
static void queue_chain(struct reader *r, unsigned s)
{
	struct run *run = r->run;
	struct slot *sl = &r->slots[s];
	struct io_uring_sqe *sqe = io_uring_get_sqe(&r->ring);

	io_uring_prep_openat_direct(sqe, AT_FDCWD, run->paths[sl->path], run->oflags, 0, s);
	sqe->flags |= IOSQE_IO_LINK;
	io_uring_sqe_set_data64(sqe, (uint64_t)s << 2 | OP_OPEN);
	sqe = io_uring_get_sqe(&r->ring);
	io_uring_prep_read(sqe, s, sl->buf, run->max_size, 0);
	sqe->flags |= IOSQE_FIXED_FILE | IOSQE_IO_LINK | (run->async ? IOSQE_ASYNC : 0);
	io_uring_sqe_set_data64(sqe, (uint64_t)s << 2 | OP_READ);
	sqe = io_uring_get_sqe(&r->ring);
	io_uring_prep_close_direct(sqe, s);
	io_uring_sqe_set_data64(sqe, (uint64_t)s << 2 | OP_CLOSE);
}

static void *reader_loop(void *arg)
{
	struct reader *r = arg;
	struct run *run = r->run;
	int exhausted = 0;

	for (;;) {
		while (!exhausted && r->n_free) {
			size_t idx = atomic_fetch_add(&run->next, 1);
			if (idx >= run->n) {
				exhausted = 1;
				break;
			}
			unsigned s = r->free_slots[--r->n_free];
			struct slot *sl = &r->slots[s];
			struct io_uring_sqe *sqe;

			sl->open_res = 0;
			sl->path = idx;
			if (run->statx) {
				sl->left = 4;
				sqe = io_uring_get_sqe(&r->ring);
				io_uring_prep_statx(sqe, AT_FDCWD, run->paths[idx], 0,
						    STATX_TYPE | STATX_SIZE, &sl->stx);
				io_uring_sqe_set_data64(sqe, (uint64_t)s << 2 | OP_STATX);
			} else {
				sl->left = 3;
				queue_chain(r, s);
			}
			r->in_flight++;
		}
		if (!r->in_flight)
			return NULL;
		int ret = io_uring_submit_and_wait(&r->ring, 1);
		if (ret < 0 && ret != -EINTR)
			die("io_uring_submit_and_wait", ret);

		struct io_uring_cqe *cqe;
		unsigned head, seen = 0;
		io_uring_for_each_cqe(&r->ring, head, cqe) {
			unsigned s = cqe->user_data >> 2, op = cqe->user_data & 3;
			struct slot *sl = &r->slots[s];
			seen++;
			if (op == OP_STATX) {
				if (cqe->res < 0) {
					sl->open_res = cqe->res;
					sl->left = 1;   /* no chain follows: the slot is done below */
					report(run, "statx", sl->path, strerror(-cqe->res));
				} else {
					queue_chain(r, s);
				}
			} else if (op == OP_OPEN) {
				sl->open_res = cqe->res;
				if (cqe->res < 0)
					report(run, "open", sl->path, strerror(-cqe->res));
			} else if (op == OP_READ) {
				if (cqe->res >= 0 && (size_t)cqe->res < run->max_size) {
					r->bytes += cqe->res;
				} else if (sl->open_res >= 0) {
					r->errors++;
					report(run, "read", sl->path,
					       cqe->res < 0 ? strerror(-cqe->res) : "larger than -m");
				}
			}
			if (--sl->left == 0) {
				if (sl->open_res < 0)
					r->errors++;
				r->free_slots[r->n_free++] = s;
				r->in_flight--;
			}
		}
		io_uring_cq_advance(&r->ring, seen);
	}
}

/* The whole list is read into memory before the clock starts: parsing is not I/O. */
static char **read_list(FILE *f, size_t *n)
{
	size_t cap = 1024, len = 0;
	char **v = malloc(cap * sizeof(*v));
	char *line = NULL;
	size_t lcap = 0;
	ssize_t r;

	while ((r = getline(&line, &lcap, f)) >= 0) {
		while (r > 0 && (line[r - 1] == '\n' || line[r - 1] == '\r'))
			line[--r] = 0;
		if (!r)
			continue;
		if (len == cap)
			v = realloc(v, (cap *= 2) * sizeof(*v));
		v[len++] = strdup(line);
	}
	free(line);
	*n = len;
	return v;
}

static void usage(void)
{
	fprintf(stderr,
		"usage: uring_ceiling [-d depth] [-t threads] [-a] [-s] [-m max_file_bytes] [-D] [-q] [LIST|-]\n"
		"  -d N  chains in flight per thread (default 64; 1 is best when everything is cached)\n"
		"  -t N  threads, each with its own ring (default 1; one thread copying cached\n"
		"        pages is capped by one core's memcpy)\n"
		"  -m N  largest file expected, bytes (default 64 MiB; a file that fills it is an error)\n"
		"  -a    IOSQE_ASYNC on reads (io-wq threads do the copies, on every core)\n"
		"  -s    STATX each path first, then the chain (what a loader that checks the\n"
		"        file type before opening pays)\n"
		"  -D    O_DIRECT (bypass the page cache; the kernel pins the whole -m buffer per read,\n"
		"        so set -m just above the largest file)\n"
		"  -q    no per-file error lines\n");
	exit(2);
}

int main(int argc, char **argv)
{
	unsigned depth = 64;
	size_t max_size = 64u << 20;
	unsigned threads = 1;
	int direct = 0, quiet = 0, async = 0, stx = 0, opt;

	while ((opt = getopt(argc, argv, "d:t:m:asDqh")) != -1) {
		switch (opt) {
		case 'd': depth = strtoul(optarg, NULL, 0); break;
		case 't': threads = strtoul(optarg, NULL, 0); break;
		case 'm': max_size = strtoull(optarg, NULL, 0); break;
		case 'a': async = 1; break;
		case 's': stx = 1; break;
		case 'D': direct = 1; break;
		case 'q': quiet = 1; break;
		default: usage();
		}
	}
	if (!depth || depth > 4096 || !threads || threads > 256 || max_size < 4096 || argc - optind > 1)
		usage();
	/* O_DIRECT wants the read length aligned too; a page multiple satisfies every fs */
	max_size = (max_size + 4095) & ~(size_t)4095;

	FILE *lf = stdin;
	if (optind < argc && strcmp(argv[optind], "-")) {
		lf = fopen(argv[optind], "r");
		if (!lf)
			die(argv[optind], errno);
	}
	size_t n;
	char **paths = read_list(lf, &n);

	/* no O_CLOEXEC: a direct descriptor is not in the fd table, and the kernel rejects it */
	struct run run = { .paths = paths, .n = n, .depth = depth, .max_size = max_size,
			   .oflags = O_RDONLY | (direct ? O_DIRECT : 0), .quiet = quiet,
			   .async = async, .statx = stx };
	struct reader *rd = calloc(threads, sizeof(*rd));
	for (unsigned t = 0; t < threads; t++) {
		rd[t].run = &run;
		reader_setup(&rd[t]);
	}
	double t0 = now();
	pthread_t *tids = calloc(threads, sizeof(*tids));
	for (unsigned t = 1; t < threads; t++)
		if ((errno = pthread_create(&tids[t], NULL, reader_loop, &rd[t])))
			die("pthread_create", errno);
	reader_loop(&rd[0]);
	uint64_t bytes = rd[0].bytes;
	size_t errors = rd[0].errors;
	for (unsigned t = 1; t < threads; t++) {
		pthread_join(tids[t], NULL);
		bytes += rd[t].bytes;
		errors += rd[t].errors;
	}
	double secs = now() - t0;

	printf("{\"files\": %zu, \"bytes\": %llu, \"seconds\": %.6f, \"errors\": %zu, "
	       "\"depth\": %u, \"threads\": %u, \"async\": %s, \"statx\": %s, \"direct\": %s}\n",
	       n, (unsigned long long)bytes, secs, errors, depth, threads, async ? "true" : "false",
	       stx ? "true" : "false", direct ? "true" : "false");
	return errors ? 1 : 0;
}
