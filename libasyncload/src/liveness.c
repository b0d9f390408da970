/* SPDX-License-Identifier: MIT */
/*
 * liveness.c - the loader's life as other processes see it: its state word,
 * noticing that it died (its flock is gone), asking it to stop, reaping a
 * spawned loader, and error messages.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/futex.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/file.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

#define AL_REAP_TIMEOUT_MS 5000
#define AL_ALIVE_CHECK_NS  (100ull * 1000 * 1000)

bool al_state_final(uint32_t state)
{
	return state == AL_STATE_STOPPED || state == AL_STATE_DEAD || state == AL_STATE_FAILED;
}

/*
 * The running loader holds an exclusive flock() on its own open file
 * description of the region; the kernel drops it when the loader dies, however
 * it dies. A shared non-blocking flock() that succeeds therefore proves the
 * loader is gone.
 */
uint32_t al_check_loader_alive(asyncload_loader *l, bool force)
{
	struct al_header *h = l->hdr;
	uint32_t state = atomic_load(&h->state);
	if (state != AL_STATE_RUNNING && state != AL_STATE_STOPPING)
		return state;
	uint64_t now = al_now_ns();
	if (!force && now - l->last_alive_check_ns < AL_ALIVE_CHECK_NS)
		return state;
	l->last_alive_check_ns = now;
	if (flock(l->fd, LOCK_SH | LOCK_NB) != 0)
		return state; /* EWOULDBLOCK: the loader holds it */
	flock(l->fd, LOCK_UN);
	/* The loader may have stopped cleanly in between: only RUNNING/STOPPING die. */
	state = atomic_load(&h->state);
	while (state == AL_STATE_RUNNING || state == AL_STATE_STOPPING) {
		if (atomic_compare_exchange_weak(&h->state, &state, AL_STATE_DEAD)) {
			state = AL_STATE_DEAD;
			al_wake_all_workers(h);
			break;
		}
	}
	return state;
}

ASYNCLOAD_EXPORT int asyncload_loader_status(asyncload_loader *l)
{
	if (!l)
		return -EINVAL;
	uint32_t state = al_check_loader_alive(l, true);
	switch (state) {
	case AL_STATE_NEW:
		return -EAGAIN;
	case AL_STATE_RUNNING:
		return 0;
	case AL_STATE_FAILED: {
		int err = atomic_load(&l->hdr->start_error);
		return err < 0 ? err : -ESHUTDOWN;
	}
	default:
		return -ESHUTDOWN;
	}
}

ASYNCLOAD_EXPORT int asyncload_loader_shutdown(asyncload_loader *l)
{
	if (!l)
		return -EINVAL;
	struct al_header *h = l->hdr;
	atomic_store(&h->shutdown_requested, 1);
	/* No loader ever started: nobody else will move the state on. */
	uint32_t expected = AL_STATE_NEW;
	if (atomic_compare_exchange_strong(&h->state, &expected, AL_STATE_STOPPED))
		al_wake_all_workers(h);
	al_ring_all_bells(h);
	return 0;
}

void al_reap_child(pid_t pid)
{
	int status;
	uint64_t deadline = al_now_ns() + (uint64_t)AL_REAP_TIMEOUT_MS * 1000000ull;
	int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
	for (;;) {
		pid_t r = waitpid(pid, &status, WNOHANG);
		if (r == pid || (r < 0 && errno != EINTR))
			break;
		uint64_t now = al_now_ns();
		if (now >= deadline) {
			kill(pid, SIGKILL);
			while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
				;
			break;
		}
		if (pidfd >= 0) {
			struct pollfd p = {.fd = pidfd, .events = POLLIN};
			poll(&p, 1, (int)((deadline - now) / 1000000ull) + 1);
		} else {
			usleep(10000);
		}
	}
	if (pidfd >= 0)
		close(pidfd);
}

ASYNCLOAD_EXPORT const char *asyncload_strerror(int err)
{
	if (err == 0)
		return "Success";
	const char *s = strerrordesc_np(err < 0 ? -err : err);
	return s ? s : "Unknown error";
}
