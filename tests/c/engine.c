/* SPDX-License-Identifier: MIT */
/*
 * engine.c - the engine option: each engine asked for is the one that runs
 * and says so (asyncload_loader_engine and its reason), loads byte-exact on
 * both, "auto" says why it chose, and an unknown engine is refused.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "helpers.h"

static void load_one(asyncload_loader *l, const char *path, uint64_t size, uint64_t seed)
{
	asyncload_worker *w;
	CHECK_OK(asyncload_worker_get(l, 0, &w));
	CHECK_OK(asyncload_worker_submit(w, path, 0, ASYNCLOAD_WHOLE_FILE, 42));
	asyncload_entry *e;
	CHECK_OK(t_get(w, &e));
	CHECK_OK(asyncload_entry_error(e));
	CHECK(asyncload_entry_tag(e) == 42);
	CHECK(asyncload_entry_size(e) == size);
	CHECK(t_check_pattern(asyncload_entry_data(e), size, seed, 0));
	asyncload_entry_release(e);
	asyncload_worker_free(w);
}

int main(void)
{
	t_init("engine");
	unsetenv("ASYNCLOAD_ENGINE");
	const char *dir = t_tmpdir();
	const char *path = t_write_file(dir, "f", 300000, 7);

	struct asyncload_options o = t_opts(4, 1 << 20, 1);
	o.engine = 3;
	asyncload_loader *bad = NULL;
	CHECK_RET(asyncload_loader_new(&bad, &o), -EINVAL);

	static const struct { uint32_t opt; const char *name; } cases[] = {
		{ASYNCLOAD_ENGINE_THREADS, "threads"},
		{ASYNCLOAD_ENGINE_IO_URING, "io_uring"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		o.engine = cases[i].opt;
		asyncload_loader *l = NULL;
		CHECK_OK(asyncload_loader_new(&l, &o));
		CHECK(strcmp(asyncload_loader_engine(l), cases[i].name) == 0, "before start: %s",
		      asyncload_loader_engine(l));
		CHECK(strcmp(asyncload_loader_engine_reason(l), "") == 0);
		pid_t pid;
		int r = asyncload_loader_spawn(l, &pid);
		if (r < 0 && cases[i].opt == ASYNCLOAD_ENGINE_IO_URING) {
			/* io_uring refused here: asked for explicitly, it fails clearly */
			CHECK(r == -EPERM || r == -ENOSYS || r == -EACCES, "spawn: %d", r);
			asyncload_loader_free(l);
			continue;
		}
		CHECK_OK(r);
		CHECK(strcmp(asyncload_loader_engine(l), cases[i].name) == 0, "%s", asyncload_loader_engine(l));
		CHECK(strcmp(asyncload_loader_engine_reason(l), "asked for") == 0, "%s",
		      asyncload_loader_engine_reason(l));
		load_one(l, path, 300000, 7);
		asyncload_loader_free(l);
	}

	o.engine = ASYNCLOAD_ENGINE_AUTO;
	asyncload_loader *l = NULL;
	CHECK_OK(asyncload_loader_new(&l, &o));
	CHECK(strcmp(asyncload_loader_engine(l), "auto") == 0);
	CHECK_OK(asyncload_loader_spawn(l, NULL));
	const char *eng = asyncload_loader_engine(l), *why = asyncload_loader_engine_reason(l);
	CHECK(strcmp(eng, "io_uring") == 0 || strcmp(eng, "threads") == 0, "%s", eng);
	CHECK(strncmp(why, "auto: ", 6) == 0, "reason: %s", why);
	if (strcmp(eng, "threads") == 0)
		CHECK(strstr(why, "io_uring") != NULL, "reason: %s", why);
	load_one(l, path, 300000, 7);
	asyncload_loader_free(l);
	return T_EXIT_PASS;
}
