/* SPDX-License-Identifier: MIT */
/*
 * bigregion.c - a large configuration (8 workers x depth 64 x 64 MiB =
 * 32 GiB of entry space) starts and serves, and memory is committed only as
 * data is loaded: the resident size of this process and of the loader, and
 * the system's committed memory, grow by far less than the region.
 */
#define _GNU_SOURCE
#include "helpers.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

#define WORKERS 8
#define DEPTH   64
#define MAXSZ   (64ull << 20)

static long committed_kb(void)
{
	char line[256];
	long v = -1;
	FILE *f = fopen("/proc/meminfo", "re");

	CHECK(f != NULL);
	while (fgets(line, sizeof(line), f))
		if (!strncmp(line, "Committed_AS:", 13))
			v = strtol(line + 13, NULL, 10);
	fclose(f);
	return v;
}

int main(void)
{
	const char *dir, *small;
	asyncload_worker *w[WORKERS];
	asyncload_entry *e;

	t_init("bigregion");
	t_require_io_uring();
	dir = t_tmpdir();
	small = t_write_file(dir, "small", 100000, 7);

	long rss0 = t_proc_status_kb(getpid(), "VmRSS:");
	long com0 = committed_kb();

	struct asyncload_options o = t_opts(DEPTH, MAXSZ, WORKERS);
	pid_t lpid;
	asyncload_loader *l = t_start(&o, &lpid);
	for (uint32_t i = 0; i < WORKERS; i++) {
		CHECK_OK(asyncload_worker_get(l, i, &w[i]));
		/* Fill the whole queue, so that every entry is touched once. */
		for (int k = 0; k < DEPTH; k++)
			CHECK_OK(asyncload_worker_request(w[i], small));
		for (int k = 0; k < DEPTH; k++) {
			CHECK_OK(t_get(w[i], &e));
			CHECK_OK(asyncload_entry_error(e));
			CHECK(t_check_pattern(asyncload_entry_data(e), 100000, 7, 0));
			asyncload_entry_release(e);
		}
	}

	long rss1 = t_proc_status_kb(getpid(), "VmRSS:");
	long lrss = t_proc_status_kb(lpid, "VmRSS:");
	long com1 = committed_kb();
	printf("bigregion: creator RSS %ld -> %ld kB, loader RSS %ld kB, Committed_AS %+ld kB\n",
	       rss0, rss1, lrss, com1 - com0);
	/* 512 entries x 100 kB loaded = 50 MB of data touched, plus the
	 * library's own bookkeeping; a region committed up front would be
	 * 32 GiB. Bounds leave room for sanitizer shadow memory. */
	CHECK(rss1 - rss0 < 512 * 1024, "creator RSS grew by %ld kB", rss1 - rss0);
	CHECK(lrss > 0 && lrss < 1024 * 1024, "loader RSS %ld kB", lrss);
	CHECK(com1 - com0 < 4L * 1024 * 1024, "Committed_AS grew by %ld kB", com1 - com0);

	for (int i = 0; i < WORKERS; i++)
		asyncload_worker_free(w[i]);
	asyncload_loader_free(l);
	printf("bigregion: ok\n");
	return T_EXIT_PASS;
}
