/* SPDX-License-Identifier: MIT */
/*
 * readloop - the baseline for asyncload-cat: the same file list, read one
 * file after another with open(2) + read(2) into one reused buffer, written
 * to stdout (or, with -q/--count, only counted). Same options and the same
 * summary line as asyncload-cat, so the two can be compared directly.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define CHUNK (1u << 20)  /* multiple of any O_DIRECT block size */

static void usage(FILE *f)
{
	fprintf(f,
		"usage: readloop [-q|--count] [-d|--direct] FILE... | -\n"
		"  Reads FILEs with read(2), one after another, and writes them to stdout.\n"
		"  -                read the list of files from stdin, one per line\n"
		"  -q, --count      write only: files, bytes, seconds, files/s\n"
		"  -d, --direct     O_DIRECT (bypass the page cache)\n");
}

static int write_all(const char *p, size_t len)
{
	while (len) {
		ssize_t w = write(STDOUT_FILENO, p, len);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			return -errno;
		p += w;
		len -= (size_t)w;
	}
	return 0;
}

/* Reads one file through buf; returns bytes read or -errno. */
static int64_t read_one(const char *path, bool direct, bool count_only, char *buf)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK | (direct ? O_DIRECT : 0));
	int64_t total = 0;

	if (fd < 0 && direct && errno == EINVAL) /* no O_DIRECT here */
		fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	if (fd < 0)
		return -errno;
	for (;;) {
		ssize_t n = read(fd, buf, CHUNK);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			int err = -errno;
			close(fd);
			return err;
		}
		if (n == 0)
			break;
		total += n;
		if (!count_only) {
			int r = write_all(buf, (size_t)n);
			if (r < 0) {
				close(fd);
				return r;
			}
		}
	}
	close(fd);
	return total;
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "count", no_argument, NULL, 'q' },
		{ "direct", no_argument, NULL, 'd' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	bool count_only = false, direct = false, from_stdin;
	uint64_t files = 0, bytes = 0;
	int c, status = 0, next;
	struct timespec t0, t1;
	char *buf, *line = NULL;
	size_t cap = 0;

	while ((c = getopt_long(argc, argv, "qdh", longopts, NULL)) != -1) {
		switch (c) {
		case 'q': count_only = true; break;
		case 'd': direct = true; break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (optind == argc) {
		usage(stderr);
		return 2;
	}
	from_stdin = argc - optind == 1 && !strcmp(argv[optind], "-");
	next = optind;
	signal(SIGPIPE, SIG_IGN);
	if (posix_memalign((void **)&buf, 4096, CHUNK)) {
		fprintf(stderr, "readloop: out of memory\n");
		return 1;
	}

	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (;;) {
		const char *path;
		if (from_stdin) {
			ssize_t n = getline(&line, &cap, stdin);
			if (n < 0)
				break;
			if (n > 0 && line[n - 1] == '\n')
				line[--n] = '\0';
			if (n == 0)
				continue;
			path = line;
		} else {
			if (next == argc)
				break;
			path = argv[next++];
		}
		int64_t r = read_one(path, direct, count_only, buf);
		if (r < 0) {
			fprintf(stderr, "readloop: %s: %s\n", path, strerror((int)-r));
			status = 1;
			if (r == -EPIPE)
				break;
			continue;
		}
		files++;
		bytes += (uint64_t)r;
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	free(line);
	free(buf);

	if (count_only) {
		double s = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
		printf("files %llu bytes %llu seconds %.6f files/s %.1f\n", (unsigned long long)files,
		       (unsigned long long)bytes, s, s > 0 ? (double)files / s : 0.0);
	}
	return status;
}
