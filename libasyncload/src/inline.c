/* SPDX-License-Identifier: MIT */
/*
 * inline.c - what the loop does itself, without an engine round trip, where
 * it cannot block: answers from the cache, the cached open on a local mount
 * and the inline read of pages already in memory. Everything else goes
 * through the steps (steps.c) and the engine.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include "cache.h"
#include "loop.h"
#include "mounts.h"

/*
 * A file opened by the cached shortcut whose pages are cached too is read
 * right here with preadv2(RWF_NOWAIT) and closed at once: one copy and no
 * engine round trip (SQE, CQE, a CLOSE op), so a cached file costs the
 * loader about what it costs a plain reader. RWF_NOWAIT fails with EAGAIN
 * instead of waiting for the device, and a read that stops short (pages
 * missing, a size-0 /proc file) leaves the rest to the engine from where
 * it stopped. Never O_DIRECT, which always goes to the device. Returns true
 * once the request is answered.
 */
static bool read_inline(struct loop *lp, uint32_t idx)
{
	struct req *r = &lp->reqs[idx];
	if (r->direct || !lp->inline_reads)
		return false;
	size_t ask = r->target > AL_READ_CHUNK ? AL_READ_CHUNK : (size_t)r->target;
	struct iovec iov = {.iov_base = al_step_buffer(lp, idx), .iov_len = ask};
	ssize_t n = preadv2(r->fd, &iov, 1, (off_t)r->file_off, RWF_NOWAIT);
	if (n < 0)
		return false; /* EAGAIN: not cached; EOPNOTSUPP, errors: the engine reads and says */
	r->got = (uint64_t)n;
	if (n != 0 && r->got < r->target)
		return false;
	close(r->fd);
	r->fd = -1;
	al_entry_at(lp->h, idx)->inline_answer = 1;
	al_step_answer_read(lp, idx);
	return true;
}

/*
 * The fast path for a file whose lookup the kernel can answer from its
 * caches: a synchronous openat2() with RESOLVE_CACHED (it fails with EAGAIN
 * rather than wait for the disk, like io_uring's own inline open) and fstat,
 * then straight to the read. This skips the STATX op, which always runs on
 * an io-wq thread, and the second path walk of a later open; it roughly
 * halves the loader's CPU per cached file. Only on mounts that cannot
 * block (a FUSE or NFS open waits for the server even when the lookup is
 * cached), and with RESOLVE_NO_XDEV beneath a mount's root where other
 * mounts may block, so a symlink cannot lead into one. The open is
 * O_NONBLOCK|O_NOCTTY, so a FIFO or terminal that lies in the way is opened
 * without blocking and refused by type before any read. Returns false to
 * leave the request to the engine (not cached, no slot free, or an answer
 * only that path words canonically).
 */
bool al_inline_open(struct loop *lp, uint32_t idx, const struct al_place *place)
{
	struct req *r = &lp->reqs[idx];
	if (!lp->free_slots.len || lp->slot_q.len)
		return false;
	struct open_how how = {.flags = al_step_open_flags(r, true), .resolve = RESOLVE_CACHED};
	int dfd = AT_FDCWD;
	const char *path = al_step_open_path(lp, idx);
	bool guarded = false;
	if (lp->h->confined) {
		how.resolve |= RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS;
		dfd = lp->root_fd;
		if (al_mounts_any_may_block(lp->mounts)) {
			how.resolve |= RESOLVE_NO_XDEV;
			guarded = true;
		}
	} else if (al_mounts_any_may_block(lp->mounts)) {
		if (place->root_fd < 0)
			return false;
		dfd = place->root_fd;
		path = place->rest;
		how.resolve |= RESOLVE_NO_XDEV;
		guarded = true;
	}
	int fd = (int)syscall(SYS_openat2, dfd, path, &how, sizeof(how));
	if (fd < 0) {
		switch (errno) {
		case EXDEV:
			if (guarded)
				return false; /* crosses a mount: let the engine look */
			/* fall through */
		case ENOENT: case ENOTDIR: case ELOOP: case EACCES: case EPERM:
		case ENAMETOOLONG: case EISDIR:
			al_loop_complete(lp, idx, -errno, 0); /* a cached answer */
			return true;
		case ENOSYS: case E2BIG:
			lp->cached_lookup = false;  /* no openat2/RESOLVE_CACHED */
			return false;
		default:
			return false;               /* EAGAIN: not cached; the rest: let the engine say */
		}
	}
	struct stat st;
	int err = fstat(fd, &st) < 0 ? -errno : 0;
	if (!err) {
		r->stx.stx_mode = (uint16_t)st.st_mode;
		r->stx.stx_size = (uint64_t)st.st_size;
		err = al_step_plan_read(lp, idx);
	}
	if (err) {
		close(fd);
		al_loop_complete(lp, idx, err, 0);
		return true;
	}
	r->fd = fd;
	if (read_inline(lp, idx))
		return true;
	r->slot = (int32_t)al_fifo_pop(&lp->free_slots);
	al_step_read_next(lp, idx, 0);
	r->phase = PH_READ;
	return true;
}

/* Kept from an earlier load: the entry points at the cached bytes. */
bool al_inline_from_cache(struct loop *lp, uint32_t idx)
{
	struct al_entry_shm *e = al_entry_at(lp->h, idx);
	uint64_t data_off, size;
	if (!al_cache_lookup(lp->cache, al_step_open_path(lp, idx), e->offset, e->length, &data_off, &size))
		return false;
	e->data_rel = (char *)lp->h + data_off - (char *)e;
	e->inline_answer = 1;
	al_loop_complete(lp, idx, 0, size);
	return true;
}

