#!/usr/bin/env python3
"""The cache benchmark: epochs over a data set twice the cache (cache_bytes), each in a new
random order with the page cache dropped first, counting the bytes each epoch reads from the
block device; an epoch of hits only against plain reader processes on a warm page cache; and,
where tools/slowfs can be mounted, an all-hit epoch against the first epoch on a 2 ms
filesystem.

    python3 tools/bench_cache.py                     # 2,000 files of 100 kB in /var/tmp
    python3 tools/bench_cache.py --n 500 --slow-n 300 --json out.json

Epochs (D = data set, C = cache_bytes = D/2): the first reads about D from the device and
keeps the first C bytes; every later epoch should read only the files not kept, D - C (an
LRU page cache of size C would read nearly all of D again). Device bytes are the loader
process's read_bytes in /proc/<pid>/io (its threads and io_uring's io-wq workers included),
so nothing else on the machine counts. Dropping is posix_fadvise(DONTNEED) per file.

Hits vs plain: a loader whose cache holds every file serves an epoch from memory; the
contender is N processes reading the same files in the same order with open/read on a warm
page cache (N = the loader's worker processes). Both only take the bytes (asyncload: a view
of the shared memory; plain: the bytes read(2) copied), as tools/bench.py measures.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import random
import shutil
import sys
import time
from typing import Any, Dict, List, Optional, Sequence

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "python"))
sys.path.insert(0, os.path.join(REPO, "tests", "python"))

import asyncload  # noqa: E402
from asyncload._contenders import PageCache  # noqa: E402


def make_files(root: str, n: int, size: int) -> List[str]:
    os.makedirs(root, exist_ok=True)
    paths = []
    for i in range(n):
        p = os.path.join(root, f"f{i:05d}.bin")
        if not (os.path.exists(p) and os.path.getsize(p) == size):
            with open(p, "wb") as f:
                f.write(os.urandom(size))
        paths.append(p)
    return paths


def read_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/io") as f:
        for line in f:
            if line.startswith("read_bytes:"):
                return int(line.split()[1])
    raise RuntimeError("no read_bytes in /proc/<pid>/io (task I/O accounting off?)")


def _loader_worker(w: Any, share: Sequence[str], conn: Any, start: Any, copy: bool) -> None:
    w.try_get()  # attach before the clock
    conn.send("ready")
    start.wait()
    nbytes = 0
    for e in w.load(share):
        with e:
            # copy: touch every byte, as read(2) does for the plain readers
            nbytes += len(e.get_data()) if copy else len(e.data)
    w.close()
    conn.send(nbytes)


def _plain_reader(share: Sequence[str], conn: Any, start: Any) -> None:
    conn.send("ready")
    start.wait()
    nbytes = 0
    for p in share:
        with open(p, "rb", buffering=0) as f:
            nbytes += len(f.read())
    conn.send(nbytes)


def run_procs(order: Sequence[str], procs: int, loader: Optional[asyncload.Loader],
              copy: bool = False) -> Dict[str, float]:
    """One epoch over `order` by `procs` forked processes (shares interleaved), timed from
    a start signal once all are ready."""
    ctx = mp.get_context("fork")
    start = ctx.Event()
    ps, conns = [], []
    for i in range(procs):
        a, b = ctx.Pipe()
        share = order[i::procs]
        if loader is not None:
            p = ctx.Process(target=_loader_worker, args=(loader.get_worker_context(i), share, b, start, copy))
        else:
            p = ctx.Process(target=_plain_reader, args=(share, b, start))
        p.start()
        ps.append(p)
        conns.append(a)
    for c in conns:
        assert c.recv() == "ready"
    t0 = time.perf_counter()
    start.set()
    nbytes = sum(c.recv() for c in conns)
    wall = time.perf_counter() - t0
    for p in ps:
        p.join(30)
    return dict(wall=wall, bytes=nbytes, files_s=len(order) / wall)


def epochs(paths: List[str], cache_bytes: int, n_epochs: int, procs: int, qd: int,
           seed: int, drop: bool, copy_from: int = 99) -> List[Dict[str, Any]]:
    """Epochs through one loader; from epoch index copy_from on, workers copy the bytes."""
    size = max(os.path.getsize(p) for p in paths)
    dropper = PageCache(paths, "fadvise")
    rows = []
    with asyncload.Loader(queue_depth=qd, max_file_size=size, n_workers=procs,
                          cache_bytes=cache_bytes) as ld:
        pid = ld.pid
        assert pid
        for ep in range(n_epochs):
            order = list(paths)
            random.Random(seed + ep).shuffle(order)
            if drop:
                dropper.drop()
            io0, st0 = read_bytes(pid), ld.stats()
            r = run_procs(order, procs, ld, copy=ep >= copy_from)
            st = ld.stats()
            r.update(epoch=ep + 1, copy=ep >= copy_from, device_bytes=read_bytes(pid) - io0,
                     hits=st["hits"] - st0["hits"], misses=st["misses"] - st0["misses"],
                     cache_bytes_used=st["cache_bytes_used"], engine=st["engine"])
            rows.append(r)
            print(f"  epoch {ep + 1}: {r['files_s']:,.0f} files/s, device {r['device_bytes'] / 1e6:,.1f} MB, "
                  f"hits {r['hits']}, misses {r['misses']}", flush=True)
    return rows


def slow_epochs(paths: List[str], procs: int, qd: int, latency_ms: float, out: str
                ) -> Optional[Dict[str, Any]]:
    try:
        from slowfs import SlowFS, SlowFSError
    except ImportError:
        return None
    src = os.path.dirname(paths[0])
    mnt = os.path.join(out, "slowfs-mnt")
    try:
        fs = SlowFS(src, mnt, latency_ms=latency_ms).start()
    except (SlowFSError, OSError) as e:
        print(f"  slowfs: not run ({e})")
        return None
    try:
        names = [fs.path(os.path.basename(p)) for p in paths]
        total = sum(os.path.getsize(p) for p in paths)
        rows = []
        with asyncload.Loader(queue_depth=qd, max_file_size=max(os.path.getsize(p) for p in paths),
                              n_workers=procs, cache_bytes=total + (1 << 20)) as ld:
            for ep in range(2):
                order = list(names)
                random.Random(ep).shuffle(order)
                r = run_procs(order, procs, ld)
                st = ld.stats()
                r.update(epoch=ep + 1, hits=st["hits"])
                rows.append(r)
                print(f"  slowfs {latency_ms} ms epoch {ep + 1}: {r['files_s']:,.0f} files/s", flush=True)
        return dict(latency_ms=latency_ms, files=len(names), epochs=rows,
                    ratio=rows[1]["files_s"] / rows[0]["files_s"])
    finally:
        fs.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", default="/var/tmp/asyncload-bench-cache",
                    help="where the files go (a real disk: its device reads are counted)")
    ap.add_argument("--n", type=int, default=2000, help="files (default 2000)")
    ap.add_argument("--size", type=int, default=100_000, help="bytes per file (default 100 kB)")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--procs", type=int, default=2, help="worker / reader processes")
    ap.add_argument("--queue-depth", type=int, default=32)
    ap.add_argument("--slow-n", type=int, default=400, help="files on slowfs (0: skip it)")
    ap.add_argument("--slow-ms", type=float, default=2.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", metavar="PATH")
    ap.add_argument("--keep", action="store_true", help="keep the files afterwards")
    args = ap.parse_args()

    paths = make_files(args.dir, args.n, args.size)
    total = args.n * args.size
    cache = total // 2
    rep: Dict[str, Any] = dict(files=args.n, size=args.size, data_bytes=total, cache_bytes=cache,
                               procs=args.procs, queue_depth=args.queue_depth,
                               kernel=os.uname().release)
    try:
        print(f"D = {total / 1e6:,.0f} MB ({args.n} files of {args.size / 1e3:,.0f} kB), "
              f"C = {cache / 1e6:,.0f} MB; page cache dropped before each epoch")
        rep["epochs"] = epochs(paths, cache, args.epochs, args.procs, args.queue_depth,
                               args.seed, drop=True)
        later = rep["epochs"][1]["device_bytes"]
        rep["second_epoch_over_d_minus_c"] = later / (total - cache)
        print(f"second epoch read {later / (total - cache):.2f} x (D - C) from the device")

        print("all hits vs plain readers on a warm page cache:")
        PageCache(paths).fill()
        order = list(paths)   # the order of the all-hit run's second epoch
        random.Random(args.seed + 1).shuffle(order)
        plain = run_procs(order, args.procs, None)
        # epochs 2 and 3 are all hits in the same order (seed + 1, seed + 1 is not reused:
        # epoch 3 takes seed + 2); the plain readers used epoch 2's order
        hits = epochs(paths, total + (1 << 20), 3, args.procs, args.queue_depth, args.seed,
                      drop=False, copy_from=2)
        hit, hit_copy = hits[1], hits[2]
        rep["plain_warm"], rep["fill_warm"], rep["all_hit"], rep["all_hit_copy"] = (
            plain, hits[0], hit, hit_copy)
        rep["all_hit_over_plain"] = hit["files_s"] / plain["files_s"]
        rep["all_hit_copy_over_plain"] = hit_copy["files_s"] / plain["files_s"]
        print(f"  plain x{args.procs}: {plain['files_s']:,.0f} files/s; all hits: "
              f"{hit['files_s']:,.0f} files/s ({rep['all_hit_over_plain']:.2f}x), copying "
              f"the bytes: {hit_copy['files_s']:,.0f} ({rep['all_hit_copy_over_plain']:.2f}x)")
        if args.slow_n:
            rep["slowfs"] = slow_epochs(paths[:args.slow_n], args.procs, args.queue_depth,
                                        args.slow_ms, args.dir + "-mnt")
            if rep["slowfs"]:
                print(f"  slowfs: all-hit epoch / first epoch = {rep['slowfs']['ratio']:.1f}x")
    finally:
        if not args.keep:
            shutil.rmtree(args.dir, ignore_errors=True)
        shutil.rmtree(args.dir + "-mnt", ignore_errors=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rep, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
