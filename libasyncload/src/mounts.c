/* SPDX-License-Identifier: MIT */
/*
 * mounts.c - the mount table as the loader needs it: which mounts may block
 * (network and FUSE filesystems), found by path prefix or by device. See
 * mounts.h. One table per loader thread, so no locking; its descriptors
 * (the table itself and, where some mount may block, one O_PATH root per
 * local mount) are opened when the thread starts and kept.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "internal.h"
#include "mounts.h"

#define AL_MOUNTS_CHECK_NS (100ull * 1000 * 1000)
#define AL_MOUNTS_MIN_NOFILE 512u

struct al_mount {
	char *point;      /* unescaped mount point */
	size_t len;
	dev_t dev;
	bool may_block;
	bool disk;        /* a block device or tmpfs: worth a root descriptor */
	int root_fd;      /* O_PATH of the mount point, or -1 */
};

struct al_mounts {
	struct al_mount *v;
	size_t n;
	bool any_may_block;
	int force;        /* 1: all may block, -1: none, 0: by type */
	int fd;           /* /proc/self/mountinfo, polled for changes */
	uint64_t next_check;
};

/* Filesystems whose lookups, opens, reads or closes wait on a server or a
 * daemon. "fuse" covers fuse.*, fuseblk (block-backed but daemon-served). */
static bool type_may_block(const char *type)
{
	static const char *const prefixes[] = {"fuse", "nfs", "cifs", "smb", "lustre", "gpfs", "ceph",
	                                       "9p", "glusterfs", "beegfs", "afs", "virtiofs", "orangefs",
	                                       "pvfs2", "ncp", "davfs", "sshfs", "s3fs", "weka", "quobyte"};
	for (size_t i = 0; i < sizeof(prefixes) / sizeof(prefixes[0]); i++)
		if (strncmp(type, prefixes[i], strlen(prefixes[i])) == 0)
			return true;
	return false;
}

/* mountinfo escapes space, tab, newline and backslash as \ooo. */
static void unescape(char *s)
{
	char *w = s;
	for (char *r = s; *r; r++) {
		if (r[0] == '\\' && r[1] >= '0' && r[1] <= '7' && r[2] >= '0' && r[2] <= '7' && r[3] >= '0' &&
		    r[3] <= '7') {
			*w++ = (char)((r[1] - '0') * 64 + (r[2] - '0') * 8 + (r[3] - '0'));
			r += 3;
		} else {
			*w++ = *r;
		}
	}
	*w = '\0';
}

static void clear(struct al_mounts *m)
{
	for (size_t i = 0; i < m->n; i++) {
		free(m->v[i].point);
		if (m->v[i].root_fd >= 0)
			close(m->v[i].root_fd);
	}
	free(m->v);
	m->v = NULL;
	m->n = 0;
	m->any_may_block = m->force > 0;
}

/*
 * Where some mount may block, the inline open resolves beneath the root of
 * the file's own (local) mount with RESOLVE_NO_XDEV. The roots are opened
 * here, once per table and whether or not a blocking mount exists yet, so
 * that the loader's descriptors do not come and go with its work or with
 * other people's FUSE mounts; cached lookups only: the way to a mount point may itself cross
 * a blocking mount. Pseudo filesystems get none (their files take the
 * engine's path).
 */
static void open_local_roots(struct al_mounts *m)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < AL_MOUNTS_MIN_NOFILE)
		return; /* descriptors are scarce: files go the engine's way */
	for (size_t i = 0; i < m->n; i++) {
		struct al_mount *mt = &m->v[i];
		if (mt->may_block || !mt->disk)
			continue;
		struct open_how how = {.flags = O_PATH | O_DIRECTORY | O_CLOEXEC, .resolve = RESOLVE_CACHED};
		int fd = (int)syscall(SYS_openat2, AT_FDCWD, mt->point, &how, sizeof(how));
		mt->root_fd = fd < 0 ? -1 : fd;
	}
}

static int parse(struct al_mounts *m)
{
	clear(m);
	FILE *f = fopen("/proc/self/mountinfo", "re");
	if (!f)
		return -errno;
	char *line = NULL;
	size_t cap = 0, alloc = 0;
	int r = 0;
	while (getline(&line, &cap, f) > 0) {
		unsigned maj, min;
		char point[4096];
		int n = 0;
		if (sscanf(line, "%*u %*u %u:%u %*s %4095s%n", &maj, &min, point, &n) != 3)
			continue;
		char *sep = strstr(line + n, " - ");
		char type[64];
		if (!sep || sscanf(sep + 3, "%63s", type) != 1)
			continue;
		if (m->n == alloc) {
			alloc = alloc ? alloc * 2 : 32;
			struct al_mount *v = realloc(m->v, alloc * sizeof(*v));
			if (!v) {
				r = -ENOMEM;
				break;
			}
			m->v = v;
		}
		unescape(point);
		struct al_mount *mt = &m->v[m->n];
		mt->point = strdup(point);
		if (!mt->point) {
			r = -ENOMEM;
			break;
		}
		mt->len = strlen(point);
		mt->dev = makedev(maj, min);
		mt->may_block = m->force > 0 || (m->force == 0 && type_may_block(type));
		mt->disk = maj != 0 || strcmp(type, "tmpfs") == 0;
		mt->root_fd = -1;
		m->any_may_block |= mt->may_block;
		m->n++;
	}
	free(line);
	fclose(f);
	/* Always, not only while a blocking mount exists: the loader's
	 * descriptors then do not come and go with other people's FUSE mounts. */
	if (r == 0)
		open_local_roots(m);
	return r;
}

int al_mounts_new(struct al_mounts **ret)
{
	struct al_mounts *m = calloc(1, sizeof(*m));
	if (!m)
		return -ENOMEM;
	const char *force = getenv("ASYNCLOAD_MAY_BLOCK_FS");
	m->force = !force ? 0 : strcmp(force, "all") == 0 ? 1 : strcmp(force, "none") == 0 ? -1 : 0;
	m->fd = open("/proc/self/mountinfo", O_RDONLY | O_CLOEXEC);
	m->next_check = al_now_ns() + AL_MOUNTS_CHECK_NS;
	*ret = m;
	int r = parse(m);
	if (r < 0) /* unknown: trust nothing */
		m->any_may_block = true;
	return r;
}

bool al_mounts_refresh(struct al_mounts *m)
{
	uint64_t now = al_now_ns();
	if (!m || m->fd < 0 || now < m->next_check)
		return false;
	m->next_check = now + AL_MOUNTS_CHECK_NS;
	/* The kernel flags a changed mount table as POLLPRI (proc(5)). */
	struct pollfd p = {.fd = m->fd, .events = POLLPRI};
	if (poll(&p, 1, 0) == 1 && (p.revents & (POLLPRI | POLLERR))) {
		char buf[4096];
		lseek(m->fd, 0, SEEK_SET);
		while (read(m->fd, buf, sizeof(buf)) > 0)
			; /* reading to the end re-arms the change flag */
		if (parse(m) < 0)
			m->any_may_block = true;
		return true;
	}
	return false;
}

struct al_mounts *al_mounts_free(struct al_mounts *m)
{
	if (!m)
		return NULL;
	clear(m);
	if (m->fd >= 0)
		close(m->fd);
	free(m);
	return NULL;
}

bool al_mounts_any_may_block(const struct al_mounts *m)
{
	return !m || m->any_may_block;
}

/* The mount holding path: the longest mount point that is a prefix of it on
 * a component boundary; the later of equal ones (it hides the earlier). */
static struct al_mount *mount_of(const struct al_mounts *m, const char *path)
{
	struct al_mount *best = NULL;
	for (size_t i = 0; i < m->n; i++) {
		struct al_mount *mt = &m->v[i];
		bool root = mt->len == 1 && mt->point[0] == '/';
		if (!root && (strncmp(path, mt->point, mt->len) != 0 || (path[mt->len] != '/' && path[mt->len] != '\0')))
			continue;
		if (!best || mt->len >= best->len)
			best = mt;
	}
	return best;
}

struct al_place al_mounts_place(const struct al_mounts *m, const char *path)
{
	struct al_place p = {.may_block = true, .root_fd = -1, .rest = NULL};
	if (m && !m->any_may_block) {
		p.may_block = false;
		return p;
	}
	const struct al_mount *mt = m && path[0] == '/' ? mount_of(m, path) : NULL;
	if (!mt || mt->may_block)
		return p;
	p.may_block = false;
	if (mt->root_fd >= 0) {
		const char *rest = path + (mt->len == 1 ? 1 : mt->len);
		while (*rest == '/')
			rest++;
		p.root_fd = mt->root_fd;
		p.rest = *rest ? rest : ".";
	}
	return p;
}

bool al_mounts_may_block_under(const struct al_mounts *m, const char *dir)
{
	if (al_mounts_place(m, dir).may_block)
		return true;
	if (!m->any_may_block)
		return false;
	size_t len = strlen(dir);
	while (len > 1 && dir[len - 1] == '/')
		len--;
	for (size_t i = 0; i < m->n; i++) {
		const struct al_mount *o = &m->v[i];
		if (o->may_block && o->len > len && strncmp(o->point, dir, len) == 0 &&
		    (o->point[len] == '/' || len == 1))
			return true;
	}
	return false;
}

bool al_mounts_dev_may_block(const struct al_mounts *m, dev_t dev)
{
	if (!m)
		return true;
	if (!m->any_may_block)
		return false;
	for (size_t i = 0; i < m->n; i++)
		if (m->v[i].dev == dev && m->v[i].may_block)
			return true;
	return false;
}
