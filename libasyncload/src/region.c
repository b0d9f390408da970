/* SPDX-License-Identifier: MIT */
/*
 * region.c - the shared region: laying it out and creating it (an unnamed
 * memfd), attaching to it by handle from another process, and unmapping it.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <linux/futex.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"


static uint64_t round_up(uint64_t v, uint64_t to)
{
	return (v + to - 1) / to * to;
}

static uint32_t pow2_at_least(uint32_t v)
{
	uint32_t p = 1;
	while (p < v)
		p <<= 1;
	return p;
}

static int map_region(asyncload_loader *l, int fd, size_t size)
{
	void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, fd, 0);
	if (p == MAP_FAILED)
		return -errno;
	l->hdr = p;
	l->map_size = size;
	l->fd = fd;
	return 0;
}

ASYNCLOAD_EXPORT int asyncload_loader_new(asyncload_loader **ret, const struct asyncload_options *opts)
{
	if (!ret)
		return -EINVAL;
	*ret = NULL;
	int r = al_options_check(opts);
	if (r < 0)
		return r;

	char *root = NULL;
	if (opts->root) {
		/* Refuse a root that is not a directory now, not at the first request. */
		int dfd = open(opts->root, O_PATH | O_DIRECTORY | O_CLOEXEC);
		if (dfd < 0)
			return -errno;
		close(dfd);
		root = realpath(opts->root, NULL);
		if (!root)
			return -errno;
	}

	uint32_t ring_size = pow2_at_least(opts->queue_depth);
	uint32_t total = opts->n_workers * opts->queue_depth;
	uint64_t workers_off = round_up(sizeof(struct al_header), AL_PAGE);
	uint64_t worker_stride = round_up(sizeof(struct al_worker_shm) + 2ull * ring_size * sizeof(uint32_t),
	                                  AL_CACHELINE);
	uint64_t entries_off = round_up(workers_off + opts->n_workers * worker_stride, AL_PAGE);
	uint64_t entry_stride = round_up(sizeof(struct al_entry_shm), AL_CACHELINE);
	uint64_t data_off = round_up(entries_off + (uint64_t)total * entry_stride, AL_PAGE);
	/* One byte more than the limit tells "too large" apart from "exactly the
	 * limit"; one page more leaves room for O_DIRECT alignment of ranges. */
	uint64_t data_stride = round_up(opts->max_file_size + 1, AL_PAGE) + AL_PAGE;
	/* The cache is address space only, like the buffers: committed as it fills. */
	uint64_t cache_off = round_up(data_off + (uint64_t)total * data_stride, AL_PAGE);
	uint64_t size = cache_off + round_up(opts->cache_bytes, AL_PAGE);
	if (size > (1ull << 46)) { /* beyond what a process can map */
		free(root);
		return -ENOMEM;
	}

	asyncload_loader *l = calloc(1, sizeof(*l));
	if (!l) {
		free(root);
		return -ENOMEM;
	}
	l->root = root;
	int fd = memfd_create("asyncload", MFD_CLOEXEC);
	if (fd < 0) {
		r = -errno;
		goto fail;
	}
	/* Sparse: pages are committed only when the loader writes data into them. */
	if (ftruncate(fd, (off_t)size) < 0) {
		r = -errno;
		close(fd);
		goto fail;
	}
	r = map_region(l, fd, size);
	if (r < 0) {
		close(fd);
		goto fail;
	}

	struct al_header *h = l->hdr;
	h->magic = AL_MAGIC;
	h->version = AL_VERSION;
	h->header_size = sizeof(*h);
	if (getrandom(&h->token, sizeof(h->token), 0) != sizeof(h->token))
		h->token = al_now_ns() ^ ((uint64_t)getpid() << 32);
	h->region_size = size;
	h->queue_depth = opts->queue_depth;
	h->n_workers = opts->n_workers;
	h->max_file_size = opts->max_file_size;
	/* more pending requests than entries can never be reached */
	h->dispatch_n = opts->dispatch_n == 0 ? 1 : opts->dispatch_n > total ? total : opts->dispatch_n;
	h->idle_iters = opts->idle_iters;
	h->direct = opts->direct;
	h->ring_size = ring_size;
	h->n_threads = al_options_threads(opts);
	h->engine_opt = opts->engine;
	atomic_store(&h->engine, opts->engine);
	h->workers_off = workers_off;
	h->worker_stride = worker_stride;
	h->entries_off = entries_off;
	h->entry_stride = entry_stride;
	h->data_off = data_off;
	h->data_stride = data_stride;
	h->cache_off = cache_off;
	h->cache_bytes = opts->cache_bytes;
	h->creator_pid = getpid();
	h->creator_fd = fd;
	if (root) {
		h->confined = 1;
		h->root_len = (uint32_t)strlen(root);
		strcpy(h->root, root);
	}
	for (uint32_t i = 0; i < total; i++) {
		struct al_entry_shm *e = al_entry_at(h, i);
		e->data_rel = al_entry_own_buffer(h, i) - (char *)e;
	}
	atomic_store(&h->state, AL_STATE_NEW);
	l->creator = getpid();
	*ret = l;
	return 0;
fail:
	free(root);
	free(l);
	return r;
}

static int attach_path(asyncload_loader *l, pid_t pid, int fd, uint64_t token)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/fd/%d", (int)pid, fd);
	int rfd = open(path, O_RDWR | O_CLOEXEC);
	if (rfd < 0)
		return -errno;
	struct stat st;
	if (fstat(rfd, &st) < 0 || (size_t)st.st_size < sizeof(struct al_header)) {
		close(rfd);
		return -ENOENT;
	}
	int r = map_region(l, rfd, (size_t)st.st_size);
	if (r < 0) {
		close(rfd);
		return r;
	}
	struct al_header *h = l->hdr;
	if (h->magic != AL_MAGIC || h->version != AL_VERSION || h->token != token ||
	    h->region_size != (uint64_t)st.st_size) {
		munmap(l->hdr, l->map_size);
		close(rfd);
		l->hdr = NULL;
		return -ENOENT; /* the pid or fd now belongs to something else */
	}
	return 0;
}

ASYNCLOAD_EXPORT int asyncload_loader_attach(asyncload_loader **ret, const char *handle)
{
	if (!ret)
		return -EINVAL;
	*ret = NULL;
	if (!handle)
		return -EINVAL;
	int cpid, cfd, lpid, lfd, n = 0;
	uint64_t token;
	if (sscanf(handle, "asyncload1:%d:%d:%d:%d:%" SCNx64 "%n", &cpid, &cfd, &lpid, &lfd, &token, &n) != 5 ||
	    handle[n] != '\0')
		return -EINVAL;
	asyncload_loader *l = calloc(1, sizeof(*l));
	if (!l)
		return -ENOMEM;
	/* The loader's copy outlives the creator's in the common case. */
	int r = -ENOENT;
	if (lpid > 0 && lfd >= 0)
		r = attach_path(l, lpid, lfd, token);
	if (r < 0 && cpid > 0 && cfd >= 0)
		r = attach_path(l, cpid, cfd, token);
	if (r < 0) {
		free(l);
		return r == -EACCES || r == -EPERM ? r : -ENOENT;
	}
	if (l->hdr->confined) {
		l->root = strdup(l->hdr->root);
		if (!l->root) {
			asyncload_loader_free(l);
			return -ENOMEM;
		}
	}
	*ret = l;
	return 0;
}

ASYNCLOAD_EXPORT int asyncload_loader_handle(const asyncload_loader *l, char *buf, size_t len)
{
	if (!l || !buf)
		return -EINVAL;
	const struct al_header *h = l->hdr;
	int n = snprintf(buf, len, "asyncload1:%d:%d:%d:%d:%016" PRIx64, h->creator_pid, h->creator_fd,
	                 (int)atomic_load(&((struct al_header *)h)->loader_pid),
	                 (int)atomic_load(&((struct al_header *)h)->loader_fd), h->token);
	if (n < 0 || (size_t)n >= len)
		return -ENOSPC;
	return n;
}

ASYNCLOAD_EXPORT int asyncload_loader_get_options(const asyncload_loader *l, struct asyncload_options *o)
{
	if (!l || !o)
		return -EINVAL;
	const struct al_header *h = l->hdr;
	asyncload_options_init(o);
	o->queue_depth = h->queue_depth;
	o->n_workers = h->n_workers;
	o->max_file_size = h->max_file_size;
	o->dispatch_n = h->dispatch_n;
	o->idle_iters = h->idle_iters;
	o->direct = h->direct;
	o->root = l->root;
	o->n_threads = h->n_threads;
	o->engine = h->engine_opt;
	o->cache_bytes = h->cache_bytes;
	return 0;
}

ASYNCLOAD_EXPORT int asyncload_loader_stats(const asyncload_loader *l, struct asyncload_stats *st)
{
	if (!l || !st)
		return -EINVAL;
	struct al_header *h = l->hdr;
	st->hits = atomic_load_explicit(&h->st_hits, memory_order_relaxed);
	st->misses = atomic_load_explicit(&h->st_misses, memory_order_relaxed);
	st->bytes_from_storage = atomic_load_explicit(&h->st_bytes_storage, memory_order_relaxed);
	st->bytes_from_cache = atomic_load_explicit(&h->st_bytes_cache, memory_order_relaxed);
	st->cache_bytes_used = atomic_load_explicit(&h->st_cache_used, memory_order_relaxed);
	st->cache_bytes = h->cache_bytes;
	return 0;
}

ASYNCLOAD_EXPORT asyncload_loader *asyncload_loader_free(asyncload_loader *l)
{
	if (!l)
		return NULL;
	if (l->spawned > 0 && l->spawner == getpid()) {
		asyncload_loader_shutdown(l);
		al_reap_child(l->spawned);
		l->spawned = 0;
	}
	if (l->hdr)
		munmap(l->hdr, l->map_size);
	if (l->fd >= 0)
		close(l->fd);
	free(l->root);
	free(l);
	return NULL;
}

