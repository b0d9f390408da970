/* SPDX-License-Identifier: MIT */
/*
 * inline_read.c - the loader reads a file whose pages are cached inline
 * (preadv2 RWF_NOWAIT, steps.c read_inline) and leaves what is not cached to
 * the engine from where the inline read stopped. Every byte must be right
 * whichever way it came: all cached, the tail evicted (a short inline read
 * then an engine read of the rest), the head evicted (EAGAIN, all from the
 * engine), all evicted, pages evicted in between, an empty file, a range,
 * and a /proc file (size 0, no RWF_NOWAIT there). Also run with the
 * shortcut off (-uncached), on the thread engine and off the loop.
 */
#define _GNU_SOURCE
#include "helpers.h"

#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define FSIZE (1u << 20)
#define SEED  777u

/* Drops [off, off + len) of path from the page cache; true if the kernel
 * did (mincore shows the first page of it gone). */
static bool evict(const char *path, off_t off, off_t len)
{
	int fd = open(path, O_RDONLY);
	CHECK(fd >= 0);
	CHECK(fdatasync(fd) == 0);
	CHECK(posix_fadvise(fd, off, len, POSIX_FADV_DONTNEED) == 0);
	void *m = mmap(NULL, FSIZE, PROT_READ, MAP_SHARED, fd, 0);
	CHECK(m != MAP_FAILED);
	unsigned char vec[FSIZE / 4096];
	CHECK(mincore(m, FSIZE, vec) == 0);
	bool gone = !(vec[off / 4096] & 1);
	munmap(m, FSIZE);
	close(fd);
	return gone;
}

static void warm(const char *path)
{
	uint64_t n;
	free(t_read_file(path, &n));
}

static void load_and_check(asyncload_worker *w, const char *path, uint64_t off, uint64_t len,
                           uint64_t want, const char *what)
{
	asyncload_entry *e;
	CHECK_OK(asyncload_worker_submit(w, path, off, len, 7));
	CHECK_OK(t_get(w, &e));
	CHECK(asyncload_entry_error(e) == 0, "%s: error %d", what, asyncload_entry_error(e));
	CHECK(asyncload_entry_size(e) == want, "%s: %llu bytes, want %llu", what,
	      (unsigned long long)asyncload_entry_size(e), (unsigned long long)want);
	CHECK(asyncload_entry_tag(e) == 7);
	CHECK(t_check_pattern(asyncload_entry_data(e), want, SEED, off), "%s: wrong bytes", what);
	asyncload_entry_release(e);
}

int main(void)
{
	t_init("inline_read");
	t_require_io_uring();
	const char *dir = t_tmpdir();
	const char *path = t_write_file(dir, "f", FSIZE, SEED);
	const char *empty = t_write_file(dir, "empty", 0, SEED);

	struct asyncload_options o = t_opts(8, 2 * FSIZE, 1);
	asyncload_loader *l = t_start(&o, NULL);
	asyncload_worker *w = NULL;
	CHECK_OK(asyncload_worker_get(l, 0, &w));

	int evicted = 0;
	for (int round = 0; round < 3; round++) {
		warm(path);
		load_and_check(w, path, 0, ASYNCLOAD_WHOLE_FILE, FSIZE, "all cached");
		load_and_check(w, path, 4096 + 17, 300000, 300000, "cached range");

		evicted += evict(path, FSIZE / 2, FSIZE / 2);
		load_and_check(w, path, 0, ASYNCLOAD_WHOLE_FILE, FSIZE, "tail evicted");

		warm(path);
		evicted += evict(path, 0, FSIZE / 4);
		load_and_check(w, path, 0, ASYNCLOAD_WHOLE_FILE, FSIZE, "head evicted");

		warm(path);
		evicted += evict(path, FSIZE / 4, 8 * 4096);
		load_and_check(w, path, 0, ASYNCLOAD_WHOLE_FILE, FSIZE, "hole evicted");

		evicted += evict(path, 0, 0);
		load_and_check(w, path, 0, ASYNCLOAD_WHOLE_FILE, FSIZE, "all evicted");
		load_and_check(w, path, FSIZE - 10, ASYNCLOAD_WHOLE_FILE, 10, "last bytes");

		asyncload_entry *e;
		CHECK_OK(asyncload_worker_request(w, empty));
		CHECK_OK(t_get(w, &e));
		CHECK(asyncload_entry_error(e) == 0 && asyncload_entry_size(e) == 0);
		asyncload_entry_release(e);

		/* size 0 in stat, read until EOF: as much as a plain read gives */
		char direct[4096];
		int pfd = open("/proc/version", O_RDONLY);
		CHECK(pfd >= 0);
		ssize_t got = read(pfd, direct, sizeof(direct));
		CHECK(got > 0);
		close(pfd);
		uint64_t n = (uint64_t)got;
		CHECK_OK(asyncload_worker_request(w, "/proc/version"));
		CHECK_OK(t_get(w, &e));
		CHECK(asyncload_entry_error(e) == 0, "/proc/version: %d", asyncload_entry_error(e));
		CHECK(asyncload_entry_size(e) == n && !memcmp(asyncload_entry_data(e), direct, n),
		      "/proc/version: %llu bytes, read %llu", (unsigned long long)asyncload_entry_size(e),
		      (unsigned long long)n);
		asyncload_entry_release(e);
	}
	/* fadvise is advice: say so if nothing was ever evicted (then only the
	 * cached path ran), but the bytes were checked either way */
	if (!evicted)
		fprintf(stderr, "inline_read: the kernel evicted nothing; only cached reads ran\n");

	asyncload_worker_free(w);
	asyncload_loader_shutdown(l);
	asyncload_loader_free(l);
	printf("inline_read: ok\n");
	return T_EXIT_PASS;
}
