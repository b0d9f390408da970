/* SPDX-License-Identifier: MIT */
/*
 * asyncload-cat - the C example of libasyncload: loads the files named on
 * the command line (or listed one per line on stdin with "-") through a
 * spawned loader with one worker, keeping its queue full, and writes their
 * contents to stdout in the order given. With -q/--count it writes nothing
 * but a summary: files, bytes, seconds, files/s.
 *
 * Build it against an installed library with
 *     cc -o asyncload-cat asyncload-cat.c $(pkg-config --cflags --libs asyncload)
 * Compare with tools/readloop (plain read(2)) on the same list.
 */
#define _GNU_SOURCE
#include <asyncload.h>

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static void usage(FILE *f)
{
	fprintf(f,
		"usage: asyncload-cat [-q|--count] [-d|--direct] [-j DEPTH] [-m MAX_BYTES] FILE... | -\n"
		"  Loads FILEs with libasyncload and writes them to stdout in order.\n"
		"  -                read the list of files from stdin, one per line\n"
		"  -q, --count      write only: files, bytes, seconds, files/s\n"
		"  -d, --direct     O_DIRECT (bypass the page cache)\n"
		"  -j, --depth N    requests in flight (default 64)\n"
		"  -m, --max N      largest file in bytes (default 64 MiB)\n");
}

/* The next path: from argv, or from stdin when the only operand is "-".
 * Returns a malloc'ed string, or NULL at the end. */
struct source {
	char **argv;
	int argc, next;
	bool from_stdin;
};

static char *next_path(struct source *s)
{
	if (!s->from_stdin)
		return s->next < s->argc ? strdup(s->argv[s->next++]) : NULL;
	for (;;) {
		char *line = NULL;
		size_t cap = 0;
		ssize_t n = getline(&line, &cap, stdin);
		if (n < 0) {
			free(line);
			return NULL;
		}
		if (n > 0 && line[n - 1] == '\n')
			line[--n] = '\0';
		if (n > 0)
			return line;
		free(line); /* skip blank lines */
	}
}

static int write_all(const void *buf, uint64_t len)
{
	const char *p = buf;

	while (len) {
		ssize_t w = write(STDOUT_FILENO, p, len > (1u << 30) ? (1u << 30) : (size_t)len);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			return -errno;
		p += w;
		len -= (uint64_t)w;
	}
	return 0;
}

/* The paths in the order given; the n-th path (from 0) is requested with
 * tag n and lives in ring[n % depth], so a completion finds its slot by its
 * tag even when a path is listed twice. Output must follow that order, but
 * entries complete in any order: an early arrival is held (it keeps its
 * entry, so it counts against the queue depth) until all before it are
 * written. A path refused at once keeps its place, with its error. */
struct slot {
	char *path;
	asyncload_entry *e;
	int refused; /* -errno from asyncload_worker_submit, or 0 */
};

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "count", no_argument, NULL, 'q' },
		{ "direct", no_argument, NULL, 'd' },
		{ "depth", required_argument, NULL, 'j' },
		{ "max", required_argument, NULL, 'm' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct asyncload_options o;
	struct source src = { 0 };
	bool count_only = false;
	int c, r, status = 0;

	asyncload_options_init(&o);
	while ((c = getopt_long(argc, argv, "qdj:m:h", longopts, NULL)) != -1) {
		switch (c) {
		case 'q': count_only = true; break;
		case 'd': o.direct = true; break;
		case 'j': o.queue_depth = (uint32_t)strtoul(optarg, NULL, 0); break;
		case 'm': o.max_file_size = strtoull(optarg, NULL, 0); break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	src.argv = argv + optind;
	src.argc = argc - optind;
	if (src.argc == 0) {
		usage(stderr);
		return 2;
	}
	src.from_stdin = src.argc == 1 && !strcmp(src.argv[0], "-");
	/* A closed pipe (| head) is reported by write(), not by a signal. */
	signal(SIGPIPE, SIG_IGN);

	asyncload_loader *l = NULL;
	asyncload_worker *w = NULL;
	pid_t pid;
	if ((r = asyncload_loader_new(&l, &o)) < 0 || (r = asyncload_loader_spawn(l, &pid)) < 0 ||
	    (r = asyncload_worker_get(l, 0, &w)) < 0) {
		fprintf(stderr, "asyncload-cat: cannot start the loader: %s\n", asyncload_strerror(r));
		asyncload_loader_free(l);
		return 1;
	}

	uint32_t depth = o.queue_depth;
	struct slot *ring = calloc(depth, sizeof(*ring));
	asyncload_entry **got = calloc(depth, sizeof(*got));
	uint64_t head = 0, tail = 0, files = 0, bytes = 0; /* tags: [head, tail) are in the ring */
	char *pending = NULL; /* read from the source, not yet accepted */
	bool eof = false;
	struct timespec t0, t1;

	if (!ring || !got) {
		fprintf(stderr, "asyncload-cat: out of memory\n");
		return 1;
	}
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (;;) {
		/* Fill the queue. */
		while (!eof && tail - head < depth) {
			if (!pending && !(pending = next_path(&src))) {
				eof = true;
				break;
			}
			r = asyncload_worker_submit(w, pending, 0, ASYNCLOAD_WHOLE_FILE, tail);
			if (r == -EAGAIN)
				break;
			if (r == -ESHUTDOWN) {
				fprintf(stderr, "asyncload-cat: %s: %s\n", pending, asyncload_strerror(r));
				status = 1;
				goto out;
			}
			/* r < 0: refused at once (empty, too long), reported in its turn */
			ring[tail % depth] = (struct slot){ .path = pending, .refused = r < 0 ? r : 0 };
			tail++;
			pending = NULL;
		}

		/* Write out (or count) everything that is now in order. */
		while (head < tail && (ring[head % depth].e || ring[head % depth].refused)) {
			struct slot *s = &ring[head % depth];
			int err = s->e ? asyncload_entry_error(s->e) : s->refused;
			if (err) {
				fprintf(stderr, "asyncload-cat: %s: %s\n", s->path, asyncload_strerror(err));
				status = 1;
			} else {
				files++;
				bytes += asyncload_entry_size(s->e);
				if (!count_only &&
				    (r = write_all(asyncload_entry_data(s->e), asyncload_entry_size(s->e))) < 0) {
					fprintf(stderr, "asyncload-cat: write: %s\n", strerror(-r));
					status = 1;
					asyncload_entry_release(s->e);
					free(s->path);
					head++;
					goto out;
				}
			}
			asyncload_entry_release(s->e);
			free(s->path);
			*s = (struct slot){ 0 };
			head++;
		}
		if (head == tail) {
			if (!pending && eof)
				break;
			if (!pending)
				continue; /* the ring was full and is now written out */
			/* -EAGAIN with nothing of ours outstanding */
			fprintf(stderr, "asyncload-cat: %s: no free entry\n", pending);
			status = 1;
			goto out;
		}

		/* Take the completions of a burst and file each under its tag. */
		do
			r = asyncload_worker_wait_batch(w, got, depth, -1);
		while (r == -EINTR);
		if (r < 0) {
			fprintf(stderr, "asyncload-cat: %s\n", asyncload_strerror(r));
			status = 1;
			goto out;
		}
		bool stranger = false;
		for (int i = 0; i < r; i++) {
			uint64_t tag = asyncload_entry_tag(got[i]);
			struct slot *s = &ring[tag % depth];
			if (tag < head || tag >= tail || s->e || s->refused) {
				/* cannot happen: the library returned a stranger */
				fprintf(stderr, "asyncload-cat: unexpected entry %s (tag %llu)\n",
					asyncload_entry_path(got[i]), (unsigned long long)tag);
				asyncload_entry_release(got[i]);
				stranger = true;
				continue;
			}
			s->e = got[i];
		}
		if (stranger) {
			status = 1;
			goto out;
		}
	}
out:
	clock_gettime(CLOCK_MONOTONIC, &t1);
	for (; head < tail; head++) {
		if (ring[head % depth].e) /* NULL: still in flight */
			asyncload_entry_release(ring[head % depth].e);
		free(ring[head % depth].path);
	}
	free(pending);
	free(ring);
	free(got);
	asyncload_worker_free(w);
	asyncload_loader_free(l);

	if (count_only) {
		double s = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
		printf("files %llu bytes %llu seconds %.6f files/s %.1f\n", (unsigned long long)files,
		       (unsigned long long)bytes, s, s > 0 ? (double)files / s : 0.0);
	}
	return status;
}
