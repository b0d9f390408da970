/* SPDX-License-Identifier: MIT */
/*
 * idle_sleep.c - waiting sleeps. CPU time alone does not tell a sleeper from
 * a fast poll (a 100 us poll uses little CPU), so this counts voluntary
 * context switches, one per sleep: an idle wait_get and an idle loader (with
 * the io_uring futex op and without it) wake a handful of times a second
 * (the 100 ms wait slice, the loader's 200 ms sleep), not thousands.
 */
#define _GNU_SOURCE
#include "helpers.h"

#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define IDLE_MS        1000
#define MAX_PER_SECOND 60  /* a sleeper makes about 10; a 1 ms poll 1000 */

/* voluntary_ctxt_switches of one task (/proc/<pid>/task/<tid>/status). */
static long task_switches(pid_t pid, const char *tid)
{
	char path[128], line[256];
	snprintf(path, sizeof(path), "/proc/%d/task/%s/status", (int)pid, tid);
	FILE *f = fopen(path, "r");
	if (!f)
		return -1;
	long v = -1;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "voluntary_ctxt_switches: %ld", &v) == 1)
			break;
	fclose(f);
	return v;
}

/* Sum over the tasks of a process (its loader threads and io_uring's
 * workers); tasks that come or go while counting add their own share. */
static long process_switches(pid_t pid)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
	DIR *d = opendir(path);
	CHECK(d != NULL, "%s", path);
	long sum = 0;
	struct dirent *de;
	while ((de = readdir(d)))
		if (de->d_name[0] != '.') {
			long v = task_switches(pid, de->d_name);
			if (v > 0)
				sum += v;
		}
	closedir(d);
	return sum;
}

static void idle_wait_get(asyncload_worker *w)
{
	char tid[32];
	snprintf(tid, sizeof(tid), "%d", (int)gettid());
	long before = task_switches(getpid(), tid);
	int64_t t0 = t_now_ms();
	asyncload_entry *e = NULL;
	int r = asyncload_worker_wait_get(w, &e, IDLE_MS);
	int64_t ms = t_now_ms() - t0;
	long n = task_switches(getpid(), tid) - before;
	CHECK(r == -ETIMEDOUT, "idle wait_get returned %d", r);
	CHECK(ms >= IDLE_MS - 5, "idle wait_get returned after %lld ms", (long long)ms);
	double per_s = n * 1000.0 / (double)ms;
	printf("idle wait_get: %ld voluntary switches in %lld ms\n", n, (long long)ms);
	CHECK(per_s < MAX_PER_SECOND, "an idle wait_get switched %ld times in %lld ms: it polls",
	      n, (long long)ms);
}

static void idle_loader(const char *path, bool futex_op)
{
	if (futex_op)
		unsetenv("ASYNCLOAD_NO_FUTEX_OP"); /* read by the loader at start */
	else
		setenv("ASYNCLOAD_NO_FUTEX_OP", "1", 1);
	struct asyncload_options o = t_opts(4, 1 << 20, 2);
	o.n_threads = 2;
	pid_t pid;
	asyncload_loader *l = t_start(&o, &pid);
	asyncload_worker *w[2];
	for (uint32_t id = 0; id < 2; id++) {
		asyncload_entry *e = NULL;
		CHECK_OK(asyncload_worker_get(l, id, &w[id]));
		CHECK_OK(asyncload_worker_request(w[id], path));
		CHECK_OK(t_get(w[id], &e));
		CHECK_OK(asyncload_entry_error(e));
		asyncload_entry_release(e);
	}
	usleep(50 * 1000); /* let it settle: closes reaped, io-wq idle */
	long before = process_switches(pid);
	int64_t t0 = t_now_ms();
	usleep(IDLE_MS * 1000);
	int64_t ms = t_now_ms() - t0;
	long n = process_switches(pid) - before;
	printf("idle loader (%s): %ld voluntary switches in %lld ms\n",
	       futex_op ? "futex op if the kernel has it" : "ASYNCLOAD_NO_FUTEX_OP=1", n, (long long)ms);
	CHECK(n * 1000.0 / (double)ms < MAX_PER_SECOND, "an idle loader switched %ld times in %lld ms",
	      n, (long long)ms);
	idle_wait_get(w[1]);
	for (uint32_t id = 0; id < 2; id++)
		asyncload_worker_free(w[id]);
	asyncload_loader_free(l);
}

int main(void)
{
	t_init("idle_sleep");
	const char *dir = t_tmpdir();
	char path[4096];
	snprintf(path, sizeof(path), "%s", t_write_file(dir, "f", 1000, 6));
	const char *env = getenv("ASYNCLOAD_NO_FUTEX_OP");
	if (!env)
		idle_loader(path, true);
	idle_loader(path, false);
	return T_EXIT_PASS;
}
