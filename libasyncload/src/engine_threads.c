/* SPDX-License-Identifier: MIT */
/*
 * engine_threads.c - the thread engine: the same ops as io_uring's, each run
 * by a pool of I/O threads with plain system calls (openat2, statx, pread,
 * close, fallocate), for hosts where io_uring is refused (container seccomp
 * profiles, kernel.io_uring_disabled, old kernels). The loop never makes
 * these calls itself, so a slow or stalled filesystem holds up only the
 * thread that waits on it. Threads start as work arrives, up to the bound,
 * and sleep on a condition variable when idle; a finished op is queued and
 * the loop's doorbell rung, which wakes the loop's futex sleep.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "engine.h"

#define AL_IO_STACK (256u << 10)

/* One unit of work: an op, or a linked pair run back to back. */
struct job {
	struct al_op op[2];
	uint8_t n;
};

struct pool {
	pthread_mutex_t lock;
	pthread_cond_t work;
	struct job *jobs;          /* FIFO of submitted jobs */
	uint32_t jobs_cap, jobs_head, jobs_len;
	struct al_completion *done; /* FIFO of completions */
	uint32_t done_cap, done_head, done_len;
	struct job staged;         /* submitted, not yet flushed */
	struct job *batch;         /* staged jobs, handed over at flush */
	uint32_t batch_len;
	bool linking;              /* the last staged op asked for a link */
	uint32_t max_threads, n_threads, idle;
	pthread_t *threads;
	bool stop;
	bool abandoned;            /* the loop is gone; threads still in a call
	                            * close what they opened, the last frees all */
	uint32_t left;             /* abandoned threads not yet finished */
	struct al_bell *bell;
};

static int run_op(const struct al_op *op, struct al_completion *c)
{
	c->idx = op->idx;
	c->kind = op->kind;
	c->fd = -1;
	long r;
	switch (op->kind) {
	case AL_OP_STATX:
		if (op->fd >= 0)
			r = statx(op->fd, "", AT_EMPTY_PATH | AT_STATX_SYNC_AS_STAT, STATX_TYPE | STATX_SIZE, op->stx);
		else
			r = statx(op->dirfd, op->path, AT_STATX_SYNC_AS_STAT, STATX_TYPE | STATX_SIZE, op->stx);
		break;
	case AL_OP_OPEN:
		r = syscall(SYS_openat2, op->dirfd, op->path, op->how, sizeof(*op->how));
		if (r >= 0) {
			c->fd = (int32_t)r;
			r = 0;
		}
		break;
	case AL_OP_READ:
		do
			r = pread(op->fd, op->buf, op->len, (off_t)op->off);
		while (r < 0 && errno == EINTR);
		break;
	case AL_OP_CLOSE:
		r = close(op->fd);
		if (r < 0 && errno == EINTR)
			r = 0; /* Linux closes the descriptor anyway */
		break;
	case AL_OP_TRIM:
		r = fallocate(op->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)op->off, (off_t)op->len);
		break;
	default:
		r = -1;
		errno = EINVAL;
	}
	c->res = r < 0 ? -errno : (int32_t)r;
	return c->res;
}

/* lock held */
static void post(struct pool *p, const struct al_completion *c)
{
	p->done[(p->done_head + p->done_len) % p->done_cap] = *c;
	p->done_len++;
}

static void ring(struct pool *p)
{
	atomic_fetch_add(&p->bell->doorbell, 1);
	if (atomic_load(&p->bell->sleeping))
		al_futex_wake(&p->bell->doorbell, 1);
}

static void free_pool(struct pool *p)
{
	pthread_mutex_destroy(&p->lock);
	pthread_cond_destroy(&p->work);
	free(p->jobs);
	free(p->batch);
	free(p->done);
	free(p->threads);
	free(p);
}

static void run_job(struct pool *p, struct job *j)
{
	struct al_completion c[2];
	int res = run_op(&j->op[0], &c[0]);
	if (j->n == 2) {
		if (res < 0) {
			c[1] = (struct al_completion){.idx = j->op[1].idx, .kind = j->op[1].kind, .res = -ECANCELED, .fd = -1};
		} else {
			/* the linked op works on the file just opened */
			if (j->op[0].kind == AL_OP_OPEN && j->op[1].fd < 0)
				j->op[1].fd = c[0].fd;
			run_op(&j->op[1], &c[1]);
		}
	}
	pthread_mutex_lock(&p->lock);
	if (p->abandoned) {
		/* nobody will close what this job opened */
		for (uint8_t i = 0; i < j->n; i++)
			if (c[i].kind == AL_OP_OPEN && c[i].fd >= 0)
				close(c[i].fd);
		pthread_mutex_unlock(&p->lock);
		return;
	}
	for (uint8_t i = 0; i < j->n; i++)
		post(p, &c[i]);
	pthread_mutex_unlock(&p->lock);
	ring(p);
}

/* Takes the oldest job and runs it without the lock; lock held on entry and exit. */
static void run_next_job(struct pool *p)
{
	struct job j = p->jobs[p->jobs_head];
	p->jobs_head = (p->jobs_head + 1) % p->jobs_cap;
	p->jobs_len--;
	pthread_mutex_unlock(&p->lock);
	run_job(p, &j);
	pthread_mutex_lock(&p->lock);
}

static void *io_thread(void *arg)
{
	struct pool *p = arg;
	pthread_mutex_lock(&p->lock);
	for (;;) {
		while (!p->jobs_len && !p->stop) {
			p->idle++;
			pthread_cond_wait(&p->work, &p->lock);
			p->idle--;
		}
		if (!p->jobs_len || p->abandoned)
			break;
		run_next_job(p);
	}
	bool last = p->abandoned && --p->left == 0;
	pthread_mutex_unlock(&p->lock);
	if (last)
		free_pool(p);
	return NULL;
}

static int threads_init(struct al_engine *e, const struct al_engine_config *cfg)
{
	struct pool *p = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	p->jobs_cap = cfg->max_ops;
	p->done_cap = cfg->max_ops;
	p->max_threads = cfg->iowq_workers ? cfg->iowq_workers : 1;
	p->bell = cfg->bell;
	p->jobs = calloc(p->jobs_cap, sizeof(*p->jobs));
	p->batch = calloc(p->jobs_cap, sizeof(*p->batch));
	p->done = calloc(p->done_cap, sizeof(*p->done));
	p->threads = calloc(p->max_threads, sizeof(*p->threads));
	if (!p->jobs || !p->batch || !p->done || !p->threads) {
		free(p->jobs);
		free(p->batch);
		free(p->done);
		free(p->threads);
		free(p);
		return -ENOMEM;
	}
	pthread_mutex_init(&p->lock, NULL);
	pthread_cond_init(&p->work, NULL);
	e->priv = p;
	e->fixed_slots = false;
	return 0;
}

static void threads_submit(struct al_engine *e, const struct al_op *op)
{
	struct pool *p = e->priv;
	if (p->linking) {
		p->batch[p->batch_len - 1].op[1] = *op;
		p->batch[p->batch_len - 1].n = 2;
	} else {
		p->batch[p->batch_len].op[0] = *op;
		p->batch[p->batch_len].n = 1;
		p->batch_len++;
	}
	p->linking = !p->linking && (op->flags & AL_OPF_LINK);
}

/* A new I/O thread, with signals blocked (they are the loader's to take). */
static void start_thread(struct pool *p)
{
	pthread_attr_t attr;
	sigset_t all, old;
	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, AL_IO_STACK);
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	if (pthread_create(&p->threads[p->n_threads], &attr, io_thread, p) == 0)
		p->n_threads++;
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	pthread_attr_destroy(&attr);
}

static void threads_flush(struct al_engine *e)
{
	struct pool *p = e->priv;
	if (!p->batch_len || p->linking)
		return;
	pthread_mutex_lock(&p->lock);
	for (uint32_t i = 0; i < p->batch_len; i++) {
		p->jobs[(p->jobs_head + p->jobs_len) % p->jobs_cap] = p->batch[i];
		p->jobs_len++;
	}
	p->batch_len = 0;
	uint32_t want = p->jobs_len > p->idle ? p->jobs_len - p->idle : 0;
	while (want-- && p->n_threads < p->max_threads)
		start_thread(p);
	if (p->n_threads == 0) {
		/* no thread could be made: run the work here rather than lose it */
		while (p->jobs_len) {
			run_next_job(p);
		}
	}
	pthread_cond_broadcast(&p->work);
	pthread_mutex_unlock(&p->lock);
}

static unsigned threads_reap(struct al_engine *e, struct al_completion *out, unsigned max)
{
	struct pool *p = e->priv;
	pthread_mutex_lock(&p->lock);
	unsigned n = 0;
	while (p->done_len && n < max) {
		out[n++] = p->done[p->done_head];
		p->done_head = (p->done_head + 1) % p->done_cap;
		p->done_len--;
	}
	pthread_mutex_unlock(&p->lock);
	return n;
}

static void threads_wait(struct al_engine *e, _Atomic uint32_t *doorbell, uint32_t seen, long timeout_us, bool busy)
{
	struct pool *p = e->priv;
	(void)busy;
	/* A completion posted before `seen` was read rang a bell we will not
	 * see change: look at the queue once more. */
	pthread_mutex_lock(&p->lock);
	bool ready = p->done_len > 0;
	pthread_mutex_unlock(&p->lock);
	if (!ready)
		al_futex_wait(doorbell, seen, timeout_us / 1000 ? (int)(timeout_us / 1000) : 1);
}

/* Ends the threads. Abandoned (ops stuck in a stalled filesystem): threads
 * still in a call are left to finish it on their own; they close what they
 * opened and the last one frees the pool, so nothing leaks once the stall
 * ends, and the loader does not wait for it. */
static void threads_exit(struct al_engine *e, bool abandoned)
{
	struct pool *p = e->priv;
	if (!p)
		return;
	e->priv = NULL;
	pthread_mutex_lock(&p->lock);
	p->stop = true;
	if (abandoned) {
		p->abandoned = true;
		p->jobs_len = 0;     /* not started: never will be */
		p->left = p->n_threads;
	}
	uint32_t n = p->n_threads;
	pthread_cond_broadcast(&p->work);
	pthread_mutex_unlock(&p->lock);
	if (abandoned) {
		for (uint32_t i = 0; i < n; i++)
			pthread_detach(p->threads[i]);
		if (n == 0)
			free_pool(p);
		return;
	}
	for (uint32_t i = 0; i < n; i++)
		pthread_join(p->threads[i], NULL);
	free_pool(p);
}

const struct al_engine_ops al_engine_threads = {
	.name = "threads",
	.init = threads_init,
	.submit = threads_submit,
	.flush = threads_flush,
	.reap = threads_reap,
	.wait = threads_wait,
	.exit = threads_exit,
};
