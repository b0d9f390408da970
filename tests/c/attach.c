/* SPDX-License-Identifier: MIT */
/*
 * attach.c - processes that were not forked from the creator reach the
 * loader through its handle string: an exec'd program (this test binary run
 * again with the handle on its command line), and a forked child that drops
 * the inherited handle and uses only a fresh asyncload_loader_attach().
 * Freeing an attached handle must not stop the loader. Also: -ENOSPC for a
 * short buffer, -EINVAL for malformed handles, -ENOENT once the loader is
 * gone.
 */
#define _GNU_SOURCE
#include "helpers.h"

#include <errno.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define N_FILES 20

static void load_all(asyncload_loader *l, uint32_t id, const char *dir)
{
	asyncload_worker *w = NULL;
	asyncload_entry *e;
	char name[32];

	CHECK_OK(asyncload_worker_get(l, id, &w));
	for (int i = 0; i < N_FILES; i++) {
		snprintf(name, sizeof(name), "a%02d", i);
		CHECK_OK(asyncload_worker_request(w, t_path(dir, name)));
		CHECK_OK(t_get(w, &e));
		CHECK_OK(asyncload_entry_error(e));
		CHECK(!strcmp(asyncload_entry_path(e), t_path(dir, name)));
		CHECK(asyncload_entry_size(e) == (uint64_t)i * 1000 + 1);
		CHECK(t_check_pattern(asyncload_entry_data(e), (uint64_t)i * 1000 + 1, (uint64_t)i, 0));
		asyncload_entry_release(e);
	}
	asyncload_worker_free(w);
}

static int child_main(const char *handle, const char *dir, const char *id)
{
	asyncload_loader *l = NULL;
	struct asyncload_options o;

	CHECK_OK(asyncload_loader_attach(&l, handle));
	CHECK(l != NULL);
	CHECK_OK(asyncload_loader_get_options(l, &o));
	CHECK(o.queue_depth == 4 && o.n_workers == 3 && o.max_file_size == (1 << 20),
	      "attached options differ: depth %u workers %u max %llu", o.queue_depth, o.n_workers,
	      (unsigned long long)o.max_file_size);
	CHECK(o.root == NULL);
	CHECK_OK(asyncload_loader_status(l));
	load_all(l, (uint32_t)atoi(id), dir);
	asyncload_loader_free(l);
	return 0;
}

int main(int argc, char **argv)
{
	char handle[ASYNCLOAD_HANDLE_MAX];
	char name[32];
	const char *dir;
	asyncload_loader *a = NULL;

	if (argc == 5 && !strcmp(argv[1], "--child")) {
		t_init("attach-child");
		return child_main(argv[2], argv[3], argv[4]);
	}
	t_init("attach");
	t_require_io_uring();
	dir = t_tmpdir();
	for (int i = 0; i < N_FILES; i++) {
		snprintf(name, sizeof(name), "a%02d", i);
		t_write_file(dir, name, (uint64_t)i * 1000 + 1, (uint64_t)i);
	}

	CHECK_RET(asyncload_loader_attach(&a, ""), -EINVAL);
	CHECK_RET(asyncload_loader_attach(&a, "not a handle"), -EINVAL);

	struct asyncload_options o = t_opts(4, 1 << 20, 3);
	pid_t lpid;
	asyncload_loader *l = t_start(&o, &lpid);

	int len = asyncload_loader_handle(l, handle, sizeof(handle));
	CHECK(len > 0 && (size_t)len == strlen(handle) && len < (int)ASYNCLOAD_HANDLE_MAX,
	      "handle length %d", len);
	char small[4];
	CHECK_RET(asyncload_loader_handle(l, small, sizeof(small)), -ENOSPC);
	printf("attach: handle '%s'\n", handle);

	/* An exec'd program: shares nothing with us but the handle. */
	pid_t pid = fork();
	CHECK(pid >= 0);
	if (pid == 0) {
		execl("/proc/self/exe", argv[0], "--child", handle, dir, "1", (char *)NULL);
		_exit(127);
	}
	t_wait_child_ok(pid, "exec'd attacher");

	/* A forked child that uses only what attach gives it. */
	pid = fork();
	CHECK(pid >= 0);
	if (pid == 0) {
		asyncload_loader_free(l); /* not the spawner: only unmaps */
		_exit(child_main(handle, dir, "2"));
	}
	t_wait_child_ok(pid, "forked attacher");

	/* The attached processes freeing their handles left the loader up. */
	CHECK_OK(asyncload_loader_status(l));
	load_all(l, 0, dir);
	load_all(l, 1, dir); /* the exec'd child gave id 1 back */

	/* Two attachments in one process are independent handles. */
	CHECK_OK(asyncload_loader_attach(&a, handle));
	CHECK_OK(asyncload_loader_status(a));
	load_all(a, 2, dir);
	asyncload_loader_free(a);
	CHECK_OK(asyncload_loader_status(l));

	asyncload_loader_free(l);
	a = NULL;
	int r = asyncload_loader_attach(&a, handle);
	CHECK(r == -ENOENT, "attach to a freed loader: %d (%s), want -ENOENT", r, asyncload_strerror(r));
	CHECK(a == NULL || r == 0);
	printf("attach: ok\n");
	return T_EXIT_PASS;
}
