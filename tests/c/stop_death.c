/* SPDX-License-Identifier: MIT */
/*
 * stop_death.c - a loader that dies while stopping (shutdown asked, reads
 * still in flight) is noticed within a second: the waiting worker gets
 * -ESHUTDOWN (LoaderClosedError in Python), not a timeout. The reads are
 * large cold O_DIRECT reads; the loader is frozen (SIGSTOP) as soon as
 * asyncload_loader_status says it no longer runs, the test checks that
 * reads were still unanswered then, and kills it. A loader that finished
 * before it could be frozen makes the test try again.
 */
#define _GNU_SOURCE
#include "helpers.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define NFILES   4
#define FSIZE    (32ull << 20)
#define ATTEMPTS 3
#define LIMIT_MS 1000

static const char *paths[NFILES];

static void drop_cache(void)
{
	for (int i = 0; i < NFILES; i++) {
		int fd = open(paths[i], O_RDONLY | O_CLOEXEC);
		CHECK(fd >= 0);
		fdatasync(fd);
		posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
		close(fd);
	}
}

/* True if the loader was caught stopping, and its death was seen in time. */
static bool attempt(void)
{
	struct asyncload_options o = t_opts(NFILES, FSIZE, 1);
	o.direct = true;
	pid_t pid;
	drop_cache();
	asyncload_loader *l = t_start(&o, &pid);
	asyncload_worker *w = NULL;
	CHECK_OK(asyncload_worker_get(l, 0, &w));
	for (int i = 0; i < NFILES; i++)
		CHECK_OK(asyncload_worker_request(w, paths[i]));
	usleep(2 * 1000); /* the loader takes them and starts reading */
	CHECK_OK(asyncload_loader_shutdown(l));
	/* status leaves 0 once the loader is stopping; freeze it right there */
	int64_t deadline = t_now_ms() + 2000;
	while (asyncload_loader_status(l) == 0 && t_now_ms() < deadline)
		;
	CHECK(kill(pid, SIGSTOP) == 0);
	/* While the loader is frozen nothing new arrives: -EAGAIN after what
	 * it answered means reads were still in flight (a loader that had
	 * finished would have left -ESHUTDOWN). */
	int r, answered = 0;
	asyncload_entry *e = NULL;
	while ((r = asyncload_worker_try_get(w, &e)) == 0) {
		answered++;
		asyncload_entry_release(e);
	}
	bool stopping = r == -EAGAIN;
	CHECK(kill(pid, SIGKILL) == 0);
	int status;
	CHECK(waitpid(pid, &status, 0) == pid);

	int64_t t0 = t_now_ms();
	while ((r = asyncload_worker_wait_get(w, &e, 5000)) == 0) {
		answered++;
		asyncload_entry_release(e);
	}
	int64_t ms = t_now_ms() - t0;
	printf("loader %s; %d answered, then %d (%s) after %lld ms\n",
	       stopping ? "killed while stopping" : "had already stopped", answered, r,
	       asyncload_strerror(r), (long long)ms);
	CHECK(r == -ESHUTDOWN, "wait_get after the loader died while stopping: %d (%s) after %lld ms",
	      r, asyncload_strerror(r), (long long)ms);
	CHECK(ms < LIMIT_MS, "the loader's death was seen only after %lld ms", (long long)ms);
	CHECK(asyncload_worker_request(w, paths[0]) == -ESHUTDOWN);
	asyncload_worker_free(w);
	asyncload_loader_free(l);
	return stopping;
}

int main(void)
{
	t_init("stop_death");
	t_require_io_uring();
	const char *dir = t_tmpdir();
	char name[16];
	for (int i = 0; i < NFILES; i++) {
		snprintf(name, sizeof(name), "big%d", i);
		paths[i] = strdup(t_write_file(dir, name, FSIZE, (uint64_t)i));
	}
	for (int i = 0; i < ATTEMPTS; i++)
		if (attempt())
			return T_EXIT_PASS;
	t_fail(__FILE__, __LINE__, "the loader finished its reads before it could be killed, %d times",
	       ATTEMPTS);
}
