/* SPDX-License-Identifier: MIT */
/*
 * sleep_check.c - a loader about to sleep looks at the rings once more
 * after raising its sleeping flag: a request published just before the
 * flag went up (so its worker did not ring) is answered at once, not after
 * the loader's 200 ms idle sleep. The loader is held exactly there by the
 * fault point "loop.sleeping" in its stop form (the process stops itself;
 * see al_fault_point), so the request lands in that window every time.
 */
#define _GNU_SOURCE
#include "helpers.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define LIMIT_MS 120 /* the idle sleep is 200 ms; an answer at once takes ~1 */

static char proc_state(pid_t pid)
{
	char path[64], buf[512];
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	FILE *f = fopen(path, "r");
	if (!f)
		return '?';
	size_t n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	const char *p = strrchr(buf, ')');
	return p && p[1] == ' ' ? p[2] : '?';
}

int main(void)
{
	t_init("sleep_check");
	t_require_io_uring();
	const char *dir = t_tmpdir();
	const char *path = t_write_file(dir, "f", 4096, 7);

	struct asyncload_options o = t_opts(4, 1 << 20, 1);
	o.n_threads = 1;
	pid_t lpid;
	setenv("ASYNCLOAD_FAULT", "stop:loop.sleeping", 1);
	asyncload_loader *l = t_start(&o, &lpid);
	unsetenv("ASYNCLOAD_FAULT");
	int64_t end = t_now_ms() + T_WAIT_MS;
	while (proc_state(lpid) != 'T' && t_now_ms() < end)
		usleep(1000);
	CHECK(proc_state(lpid) == 'T', "the loader never stopped at loop.sleeping");

	asyncload_worker *w = NULL;
	asyncload_entry *e;
	CHECK_OK(asyncload_worker_get(l, 0, &w));
	int r = asyncload_worker_request(w, path);
	int64_t t0 = t_now_ms();
	CHECK(kill(lpid, SIGCONT) == 0);
	CHECK_RET(r, 0);
	CHECK_RET(t_get(w, &e), 0);
	int64_t took = t_now_ms() - t0;
	CHECK_RET(asyncload_entry_error(e), 0);
	CHECK(asyncload_entry_size(e) == 4096);
	CHECK(t_check_pattern(asyncload_entry_data(e), 4096, 7, 0));
	asyncload_entry_release(e);
	printf("sleep_check: answered %lld ms after the loader went on\n", (long long)took);
	CHECK(took < LIMIT_MS, "%lld ms: the loader slept with a request in its ring", (long long)took);
	asyncload_worker_free(w);
	asyncload_loader_free(l);
	return T_EXIT_PASS;
}
