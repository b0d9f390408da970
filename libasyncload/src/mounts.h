/* SPDX-License-Identifier: MIT */
/*
 * mounts.h - which filesystems may block the loop: network and FUSE mounts
 * (NFS, CIFS, Lustre, GPFS, Ceph, 9p, FUSE, ...), read from
 * /proc/self/mountinfo, which answers from memory. Requests on them get no
 * inline work: every op goes to io_uring's async workers or to threads.
 * ASYNCLOAD_MAY_BLOCK_FS=all treats every mount so (tests use it to run the
 * off-loop path on a local disk); =none trusts every mount.
 */
#ifndef ASYNCLOAD_MOUNTS_H
#define ASYNCLOAD_MOUNTS_H

#include <stdbool.h>
#include <sys/types.h>

struct al_mounts;

/* Reads the mount table; -errno (then every mount is treated as blocking). */
int  al_mounts_new(struct al_mounts **ret);
/* Re-reads the table if it changed (cheap: a poll, at most every 100 ms);
 * true if it did. */
bool al_mounts_refresh(struct al_mounts *m);
struct al_mounts *al_mounts_free(struct al_mounts *m);

bool al_mounts_any_may_block(const struct al_mounts *m);
/* Where a path lies, from one look at the table: whether its filesystem may
 * block (true for a relative path or an unread table), and on a mount that
 * cannot, an O_PATH descriptor of that mount's root and the rest of the
 * path, to resolve with RESOLVE_NO_XDEV (root_fd -1: none to be had without
 * blocking, or no mount may block and none is needed). */
struct al_place {
	bool may_block;
	int root_fd;
	const char *rest;
};
struct al_place al_mounts_place(const struct al_mounts *m, const char *path);
/* A lookup at or beneath directory `dir` (a confined root) may reach one. */
bool al_mounts_may_block_under(const struct al_mounts *m, const char *dir);
bool al_mounts_dev_may_block(const struct al_mounts *m, dev_t dev);

#endif /* ASYNCLOAD_MOUNTS_H */
