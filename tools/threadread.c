/* SPDX-License-Identifier: MIT */
/*
 * threadread - the thread-pool baseline for slow (network or FUSE) storage:
 * N pthreads take files from a shared list and each does open/read/close
 * with plain blocking syscalls, no Python in the way. tools/bench_slow.py
 * measures asyncload against it, since on a slow filesystem the storage
 * harness (not the reader) sets the ceiling.
 *
 *   threadread [-t THREADS] [-q] LIST       LIST: one path a line, or - for stdin
 *
 * Prints one JSON line: {"files", "bytes", "seconds", "errors", "files_s",
 * "threads"}; the clock starts once every thread is up and waiting.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define BUF (1u << 20)

static char **paths;
static size_t n_paths;
static atomic_size_t next_path;
static atomic_ullong total_bytes;
static atomic_size_t total_errors, total_files;
static bool quiet;
static pthread_barrier_t start;

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void *reader(void *arg)
{
	(void)arg;
	char *buf = malloc(BUF);
	if (!buf)
		abort();
	pthread_barrier_wait(&start);
	for (;;) {
		size_t i = atomic_fetch_add(&next_path, 1);
		if (i >= n_paths)
			break;
		int fd = open(paths[i], O_RDONLY | O_CLOEXEC);
		if (fd < 0) {
			if (!quiet)
				fprintf(stderr, "threadread: open %s: %s\n", paths[i], strerror(errno));
			atomic_fetch_add(&total_errors, 1);
			continue;
		}
		unsigned long long got = 0;
		ssize_t n;
		/* loop until EOF: slow filesystems answer short reads */
		while ((n = read(fd, buf, BUF)) > 0)
			got += (unsigned long long)n;
		if (n < 0) {
			if (!quiet)
				fprintf(stderr, "threadread: read %s: %s\n", paths[i], strerror(errno));
			atomic_fetch_add(&total_errors, 1);
		} else {
			atomic_fetch_add(&total_files, 1);
		}
		atomic_fetch_add(&total_bytes, got);
		close(fd);
	}
	free(buf);
	return NULL;
}

static int read_list(const char *name)
{
	FILE *f = strcmp(name, "-") ? fopen(name, "r") : stdin;
	if (!f) {
		fprintf(stderr, "threadread: %s: %s\n", name, strerror(errno));
		return -1;
	}
	size_t cap = 0;
	char *line = NULL;
	size_t lcap = 0;
	ssize_t len;
	while ((len = getline(&line, &lcap, f)) >= 0) {
		while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
			line[--len] = '\0';
		if (!len)
			continue;
		if (n_paths == cap) {
			cap = cap ? 2 * cap : 1024;
			char **p = realloc(paths, cap * sizeof *p);
			if (!p)
				abort();
			paths = p;
		}
		paths[n_paths] = strdup(line);
		if (!paths[n_paths++])
			abort();
	}
	free(line);
	if (f != stdin)
		fclose(f);
	return 0;
}

int main(int argc, char **argv)
{
	long threads = 64;
	int c;
	while ((c = getopt(argc, argv, "t:qh")) != -1) {
		switch (c) {
		case 't':
			threads = strtol(optarg, NULL, 10);
			break;
		case 'q':
			quiet = true;
			break;
		default:
			fprintf(c == 'h' ? stdout : stderr,
				"usage: threadread [-t THREADS] [-q] LIST|-\n"
				"  N threads doing open/read/close over the files in LIST; prints JSON.\n");
			return c == 'h' ? 0 : 2;
		}
	}
	if (optind != argc - 1 || threads < 1 || threads > 100000) {
		fprintf(stderr, "usage: threadread [-t THREADS] [-q] LIST|-\n");
		return 2;
	}
	if (read_list(argv[optind]))
		return 1;
	pthread_t *tids = calloc((size_t)threads, sizeof *tids);
	if (!tids)
		return 1;
	pthread_barrier_init(&start, NULL, (unsigned)threads + 1);
	pthread_attr_t attr;
	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, 256 << 10);
	for (long i = 0; i < threads; i++) {
		int err = pthread_create(&tids[i], &attr, reader, NULL);
		if (err) {
			fprintf(stderr, "threadread: thread %ld: %s\n", i, strerror(err));
			return 1;
		}
	}
	pthread_barrier_wait(&start);
	double t0 = now();
	for (long i = 0; i < threads; i++)
		pthread_join(tids[i], NULL);
	double secs = now() - t0;
	size_t files = atomic_load(&total_files);
	printf("{\"files\": %zu, \"bytes\": %llu, \"seconds\": %.6f, \"errors\": %zu, "
	       "\"files_s\": %.1f, \"threads\": %ld}\n",
	       files, atomic_load(&total_bytes), secs, atomic_load(&total_errors),
	       secs > 0 ? (double)files / secs : 0.0, threads);
	for (size_t i = 0; i < n_paths; i++)
		free(paths[i]);
	free(paths);
	free(tids);
	return atomic_load(&total_errors) ? 1 : 0;
}
