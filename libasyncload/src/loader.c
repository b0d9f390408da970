/* SPDX-License-Identifier: MIT */
/*
 * loader.c - the loader process's life: becoming the loader (its lock, its
 * threads, each running loop.c's event loop with its own engine, started
 * together or not at all), forking a loader process, and the signals and
 * parent death that stop it.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "loop.h"

static volatile sig_atomic_t al_sigterm;

bool al_loop_stop_signalled(void)
{
	return al_sigterm != 0;
}

/* The loader's own description of the region, so its flock() is its own. */
static int take_loader_lock(asyncload_loader *l)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/self/fd/%d", l->fd);
	int fd = open(path, O_RDWR | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
		int err = errno == EWOULDBLOCK ? -EBUSY : -errno;
		close(fd);
		return err;
	}
	return fd;
}

/* The threads of one loader start together: all rings set up, or none runs. */
struct start_gate {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	uint32_t ready;
	uint32_t serving;   /* threads still in their loop */
	bool go, failed;
	int error;
};

struct loader_thread {
	asyncload_loader *l;
	const struct al_engine_ops *engine;
	struct al_cache *cache;
	struct start_gate *gate;
	int region_fd;
	pid_t parent;
	uint32_t tid;
	bool started;
	pthread_t thread;
	struct loop lp;
};

/* The last loop to end says STOPPED before any engine is torn down: a
 * request abandoned on a stalled filesystem may keep an engine (and so the
 * process) from finishing, but not the workers from hearing of the stop. */
static void loop_done(struct start_gate *g, struct al_header *h)
{
	pthread_mutex_lock(&g->lock);
	bool last = --g->serving == 0;
	pthread_mutex_unlock(&g->lock);
	if (last) {
		atomic_store(&h->state, AL_STATE_STOPPED);
		al_wake_all_workers(h);
		al_futex_wake(&h->state, INT_MAX);
	}
}

/* Sets the thread's ring up (io_uring wants its single issuer to be the
 * thread that created it), waits for the others, serves until shutdown. */
static void *loader_thread_main(void *arg)
{
	struct loader_thread *t = arg;
	struct start_gate *g = t->gate;
	int r = al_loop_init(&t->lp, t->l, t->engine, t->region_fd, t->tid);
	t->lp.cache = t->cache;
	pthread_mutex_lock(&g->lock);
	if (r < 0 && !g->failed) {
		g->failed = true;
		g->error = r;
	}
	g->ready++;
	pthread_cond_broadcast(&g->cond);
	while (!g->go)
		pthread_cond_wait(&g->cond, &g->lock);
	bool run = !g->failed;
	pthread_mutex_unlock(&g->lock);
	if (r >= 0 && run) {
		t->lp.parent = t->parent;
		al_loop_run(&t->lp);
		loop_done(g, t->l->hdr);
	}
	al_loop_free(&t->lp);
	return NULL;
}

static const char *const engine_names[] = {"auto", "io_uring", "threads"};

/*
 * The engine this loader runs: the one asked for (the option, or
 * ASYNCLOAD_ENGINE over "auto"), else io_uring where a ring with every
 * operation the loader needs can be set up, else threads. The reason is
 * kept in the header for asyncload_loader_engine_reason(), so a slower
 * engine is never chosen silently.
 */
static const struct al_engine_ops *choose_engine(struct al_header *h)
{
	uint32_t want = h->engine_opt;
	const char *env = getenv("ASYNCLOAD_ENGINE");
	const char *why = "asked for";
	if (want == ASYNCLOAD_ENGINE_AUTO && env && env[0]) {
		if (strcmp(env, "threads") == 0)
			want = ASYNCLOAD_ENGINE_THREADS;
		else if (strcmp(env, "io_uring") == 0)
			want = ASYNCLOAD_ENGINE_IO_URING;
		why = "asked for by ASYNCLOAD_ENGINE";
	}
	snprintf(h->engine_reason, sizeof(h->engine_reason), "%s", why);
	if (want == ASYNCLOAD_ENGINE_AUTO) {
		want = ASYNCLOAD_ENGINE_IO_URING;
		snprintf(h->engine_reason, sizeof(h->engine_reason), "auto: io_uring is available");
		if (!al_uring_usable(h->engine_reason, sizeof(h->engine_reason)))
			want = ASYNCLOAD_ENGINE_THREADS;
	}
	atomic_store(&h->engine, want);
	return want == ASYNCLOAD_ENGINE_THREADS ? &al_engine_threads : &al_engine_uring;
}

ASYNCLOAD_EXPORT const char *asyncload_loader_engine(const asyncload_loader *l)
{
	if (!l)
		return NULL;
	uint32_t e = atomic_load(&l->hdr->engine);
	return e < sizeof(engine_names) / sizeof(engine_names[0]) ? engine_names[e] : "auto";
}

ASYNCLOAD_EXPORT const char *asyncload_loader_engine_reason(const asyncload_loader *l)
{
	if (!l)
		return NULL;
	uint32_t state = atomic_load(&l->hdr->state);
	return state == AL_STATE_NEW ? "" : l->hdr->engine_reason;
}

static int loader_run(asyncload_loader *l, pid_t parent)
{
	struct al_header *h = l->hdr;
	uint32_t state = atomic_load(&h->state);
	if (state != AL_STATE_NEW)
		return al_state_final(state) ? -ESHUTDOWN : -EBUSY;

	int lock_fd = take_loader_lock(l);
	int r = lock_fd;
	const struct al_engine_ops *engine = lock_fd >= 0 ? choose_engine(h) : NULL;
	uint32_t n = h->n_threads ? h->n_threads : 1;
	struct loader_thread *ts = NULL;
	struct start_gate gate = {.lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER};
	struct al_cache *cache = NULL;
	if (r >= 0)
		r = al_cache_new(&cache, h);
	if (r >= 0) {
		ts = calloc(n, sizeof(*ts));
		r = ts ? 0 : -ENOMEM;
	}
	if (r >= 0) {
		for (uint32_t i = 0; i < n; i++) {
			ts[i] = (struct loader_thread){.l = l, .engine = engine, .cache = cache, .gate = &gate,
			                               .region_fd = lock_fd, .parent = parent, .tid = i};
		}
		/* thread 0 is the calling thread */
		for (uint32_t i = 1; i < n; i++) {
			int e = pthread_create(&ts[i].thread, NULL, loader_thread_main, &ts[i]);
			if (e) {
				pthread_mutex_lock(&gate.lock);
				gate.failed = true;
				gate.error = -e;
				gate.ready++;
				pthread_mutex_unlock(&gate.lock);
			} else {
				ts[i].started = true;
			}
		}
		int r0 = al_loop_init(&ts[0].lp, l, engine, lock_fd, 0);
		ts[0].lp.cache = cache;
		pthread_mutex_lock(&gate.lock);
		if (r0 < 0 && !gate.failed) {
			gate.failed = true;
			gate.error = r0;
		}
		gate.ready++;
		while (gate.ready < n)
			pthread_cond_wait(&gate.cond, &gate.lock);
		r = gate.failed ? gate.error : 0;
		gate.serving = n;
		if (!gate.failed) {
			atomic_store(&h->loader_pid, getpid());
			atomic_store(&h->loader_fd, lock_fd);
			uint32_t expected = AL_STATE_NEW;
			/* a shutdown before we started is seen by every thread's loop */
			atomic_compare_exchange_strong(&h->state, &expected, AL_STATE_RUNNING);
			al_futex_wake(&h->state, INT_MAX);
		}
		gate.go = true;
		pthread_cond_broadcast(&gate.cond);
		pthread_mutex_unlock(&gate.lock);
		if (r0 >= 0 && !gate.failed) {
			ts[0].lp.parent = parent;
			al_loop_run(&ts[0].lp);
			loop_done(&gate, h);
		}
		al_loop_free(&ts[0].lp);
		for (uint32_t i = 1; i < n; i++)
			if (ts[i].started)
				pthread_join(ts[i].thread, NULL);
	}
	free(ts);
	al_cache_free(cache); /* every loop has ended: no thread looks it up */
	if (r < 0) {
		atomic_store(&h->start_error, r);
		uint32_t expected = AL_STATE_NEW;
		if (atomic_compare_exchange_strong(&h->state, &expected, AL_STATE_FAILED))
			al_wake_all_workers(h);
		al_futex_wake(&h->state, INT_MAX);
		if (lock_fd >= 0)
			close(lock_fd);
		return r;
	}
	atomic_store(&h->state, AL_STATE_STOPPED);
	al_wake_all_workers(h);
	al_futex_wake(&h->state, INT_MAX);
	close(lock_fd);
	return 0;
}

ASYNCLOAD_EXPORT int asyncload_loader_run(asyncload_loader *l)
{
	if (!l)
		return -EINVAL;
	return loader_run(l, 0);
}

static void on_sigterm(int sig)
{
	(void)sig;
	al_sigterm = 1;
}

ASYNCLOAD_EXPORT int asyncload_loader_spawn(asyncload_loader *l, pid_t *pid)
{
	if (!l)
		return -EINVAL;
	struct al_header *h = l->hdr;
	uint32_t state = atomic_load(&h->state);
	if (state != AL_STATE_NEW)
		return al_state_final(state) ? -ESHUTDOWN : -EBUSY;
	if (l->spawned > 0)
		return -EBUSY;

	pid_t parent = getpid();
	pid_t child = fork();
	if (child < 0)
		return -errno;
	if (child == 0) {
		/* Only our own descriptors: the loader must not keep the
		 * parent's pipes or sockets open. */
		int keep = l->fd;
		if (keep > 3)
			close_range(3, (unsigned)keep - 1, 0);
		close_range((unsigned)keep + 1, ~0u, 0);
		sigset_t all;
		sigemptyset(&all);
		sigprocmask(SIG_SETMASK, &all, NULL);
		/* Ctrl-C reaches the whole process group; the creator decides. */
		signal(SIGINT, SIG_IGN);
		signal(SIGPIPE, SIG_IGN);
		struct sigaction sa;
		memset(&sa, 0, sizeof(sa));
		sa.sa_handler = on_sigterm;
		sigaction(SIGTERM, &sa, NULL);
		sigaction(SIGHUP, &sa, NULL);
		struct rlimit rl;
		if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
			rl.rlim_cur = rl.rlim_max > 1u << 20 ? 1u << 20 : rl.rlim_max;
			setrlimit(RLIMIT_NOFILE, &rl);
		}
		if (getppid() != parent)
			_exit(0);
		int r = loader_run(l, parent);
		_exit(r < 0 ? 1 : 0);
	}

	l->spawned = child;
	l->spawner = parent;
	/* Return once the child serves requests or has failed to start. */
	for (;;) {
		state = atomic_load(&h->state);
		if (state != AL_STATE_NEW)
			break;
		int status;
		pid_t w = waitpid(child, &status, WNOHANG);
		if (w == child) {
			l->spawned = 0;
			int err = atomic_load(&h->start_error);
			return err < 0 ? err : -ECHILD;
		}
		al_futex_wait(&h->state, AL_STATE_NEW, 20);
	}
	if (state == AL_STATE_FAILED) {
		int err = atomic_load(&h->start_error);
		al_reap_child(child);
		l->spawned = 0;
		return err < 0 ? err : -ECHILD;
	}
	if (pid)
		*pid = child;
	return 0;
}
