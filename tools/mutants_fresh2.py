"""mutants_fresh2.py - a third list of mutants for tools/mutate.py (--set fresh2),
written blind by someone who read the library's code but neither the tests nor
the earlier lists: the issue's "fresh set of plausible bugs made by someone
else"."""
from __future__ import annotations

from typing import List

from mutate import Mutant

FRESH2: List[Mutant] = [
    Mutant("read-next-same-offset",
           "\t                   .off = r->file_off + r->got};",
           "\t                   .off = r->file_off};",
           "every read after the first of a load starts again at the range's start: a /proc-style file or a "
           "load resumed after a short read gets repeated bytes (or EFBIG) instead of its contents"),
    Mutant("dispatch-needs-both",
           "if (lp->new_q.len >= h->dispatch_n || lp->idle_polls >= h->idle_iters)",
           "if (lp->new_q.len >= h->dispatch_n && lp->idle_polls >= h->idle_iters)",
           "with dispatch_n > 1, fewer pending requests than dispatch_n are never started: loads hang "
           "instead of starting after idle_iters polls"),
    Mutant("cache-hit-own-buffer",
           "\te->data_rel = (char *)lp->h + data_off - (char *)e;\n\te->inline_answer = 1;",
           "\t(void)data_off;\n\te->inline_answer = 1;",
           "a cache hit is answered with the right size but the entry still points at its own buffer: "
           "the caller sees stale or zero bytes instead of the cached file"),
    Mutant("inline-read-fd-leak",
           "\tclose(r->fd);\n\tr->fd = -1;\n\tal_entry_at(lp->h, idx)->inline_answer = 1;",
           "\tr->fd = -1;\n\tal_entry_at(lp->h, idx)->inline_answer = 1;",
           "every file answered by the inline read leaves its descriptor open in the loader: descriptors "
           "pile up until opens fail with EMFILE"),
    Mutant("cache-used-absolute",
           "\t\tc->next = at + len;\n\t\tatomic_store_explicit(&c->h->st_cache_used, c->next - c->start, "
           "memory_order_relaxed);",
           "\t\tc->next = at + len;\n\t\tatomic_store_explicit(&c->h->st_cache_used, c->next, "
           "memory_order_relaxed);",
           "asyncload_loader_stats() reports cache_bytes_used as a region offset (far above cache_bytes) "
           "instead of the bytes the cache holds"),
    Mutant("takeover-keeps-held",
           "\t\tuint32_t s = AL_ENTRY_HELD;\n\t\tif (!atomic_compare_exchange_strong(&e->state, &s, "
           "AL_ENTRY_FREE) && s == AL_ENTRY_QUEUED &&",
           "\t\tuint32_t s = atomic_load(&e->state);\n\t\tif (s == AL_ENTRY_QUEUED &&",
           "entries a dead worker held (taken, never released) stay HELD after takeover: the new holder "
           "has a smaller queue, and submit fails with EAGAIN once the dead one held them all"),
    Mutant("wait-timeout-micros",
           "al_now_ns() + (uint64_t)timeout_ms * 1000000ull;",
           "al_now_ns() + (uint64_t)timeout_ms * 1000ull;",
           "wait_get/wait_batch treat the timeout as microseconds: a wait of 1000 ms gives up with "
           "ETIMEDOUT after 1 ms while the load is still being read"),
    Mutant("final-misses-failed",
           "return state == AL_STATE_STOPPED || state == AL_STATE_DEAD || state == AL_STATE_FAILED;",
           "return state == AL_STATE_STOPPED || state == AL_STATE_DEAD;",
           "a loader that failed to start is not seen as final: submit still accepts requests and "
           "wait_get with no timeout hangs instead of returning ESHUTDOWN"),
    Mutant("free-from-forked-child",
           "if (l->spawned > 0 && l->spawner == getpid()) {",
           "if (l->spawned > 0) {",
           "a process forked after spawn (a DataLoader worker) that frees its inherited loader handle "
           "shuts the loader down for everyone"),
    Mutant("option-max-exclusive",
           "if (v < d->info.min || v > d->info.max)",
           "if (v < d->info.min || v >= d->info.max)",
           "each option's documented maximum is refused with EINVAL: direct=1, engine=threads, "
           "queue_depth=ASYNCLOAD_MAX_QUEUE_DEPTH all fail loader_new"),
    Mutant("threads-link-no-fd",
           "\t\t\tif (j->op[0].kind == AL_OP_OPEN && j->op[1].fd < 0)\n\t\t\t\tj->op[1].fd = c[0].fd;\n"
           "\t\t\trun_op(&j->op[1], &c[1]);",
           "\t\t\trun_op(&j->op[1], &c[1]);",
           "with the thread engine the read linked to an open runs on fd -1: every load that goes through "
           "the engine's open+read (cold file, FUSE, no cached lookup) fails with EBADF"),
    Mutant("uring-read-fixed-by-slot",
           "\t\tfixed = op->fd < 0;",
           "\t\tfixed = op->slot >= 0;",
           "io_uring reads of a file opened with a real descriptor (confined, inline open, O_DIRECT) use "
           "the empty fixed-file slot instead: they fail with EBADF or read another file"),
    Mutant("fs-type-exact-match",
           "if (strncmp(type, prefixes[i], strlen(prefixes[i])) == 0)",
           "if (strcmp(type, prefixes[i]) == 0)",
           "fuse.<name>, nfs4 and similar mounts are taken for local disks: a stalled FUSE or NFS server "
           "blocks the loader thread in an inline open and every other load with it"),
    Mutant("futex-timeout-seconds",
           "\t\tts.tv_sec = timeout_ms / 1000;",
           "\t\tts.tv_sec = timeout_ms;",
           "futex sleeps last timeout_ms seconds instead of milliseconds: a worker waiting on a loader "
           "that was killed does not notice for minutes, nor a loader whose parent died"),
]
