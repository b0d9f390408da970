#!/usr/bin/env python3
"""Where a cached file's CPU goes: plain reads against asyncload's worker and loader, per file.

    python3 tools/bench_entry.py                    # 20,000 cached files, 7 rounds
    python3 tools/bench_entry.py --n 5000 --rounds 3

The warm target "CPU per file at most a plain reader's" (docs/benchmarks.md). Throughput on two shared
cores moves 10-30 % between minutes and depends on how four threads share two cores; CPU per
file does not, so this tool measures only that, in one process, one worker, depth 64, every
file in the page cache. Each round runs, back to back:

  plain     `with open(p, "rb") as f: f.read()` per file: this process's CPU (kernel + Python)
  load      Worker.load() with `len(e.data)` and `e.release()` per entry: this process's CPU
            (the worker: Python and the C calls) and the loader process's CPU (its threads' schedstat)
  c-floor   the same requests through the C calls alone (submit, wait_batch, release, in the
            same windows of 16), no Entry objects: what any cffi binding must spend

and prints per round: the worker's µs per entry (load, c-floor), the loader's µs per file, and
(worker + loader) ÷ plain, the figure the target wants at or below 1.0. The rows "load - c-floor"
say how much of the worker's cost is our Python above the C calls.
"""

import argparse
import os
import random
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)

from asyncload._fill import WARM_WINDOW as WINDOW  # noqa: E402  load()'s window while cached
from bench import proc_runtime_ns  # noqa: E402  schedstat: finer than /proc/PID/stat's ticks


def read_plain(paths):
    for p in paths:
        with open(p, "rb") as f:
            f.read()


def read_load(worker, paths):
    for e in worker.load(paths):
        len(e.data)
        e.release()


def read_c_floor(worker, raw_paths):
    """The C calls Worker.load() makes per file, without any Python object per entry."""
    from asyncload._lowlevel import ffi, lib
    from asyncload._state import WHOLE_FILE
    wptr = worker._handle()
    submit, wait, release = (lib.asyncload_worker_submit, lib.asyncload_worker_wait_batch,
                             lib.asyncload_entry_release)
    out = ffi.new("asyncload_entry *[]", WINDOW)
    i, n, in_flight = 0, len(raw_paths), 0
    while i < n or in_flight:
        if in_flight <= WINDOW // 2:
            while i < n and in_flight < WINDOW:
                rc = submit(wptr, raw_paths[i], 0, WHOLE_FILE, i)
                if rc < 0:
                    raise OSError(-rc, os.strerror(-rc), raw_paths[i])
                i += 1
                in_flight += 1
        got = wait(wptr, out, WINDOW, 1000)
        if got < 0:
            raise OSError(-got, os.strerror(-got))
        for k in range(got):
            release(out[k])
        in_flight -= got


def timed(fn, loader_pid, n):
    """(this thread's CPU µs per file, the loader's CPU µs per file) for one pass."""
    l0 = proc_runtime_ns(loader_pid) if loader_pid else 0
    c0 = time.thread_time_ns()
    fn()
    c = time.thread_time_ns() - c0
    loader = (proc_runtime_ns(loader_pid) - l0) if loader_pid else 0
    return c / n / 1e3, loader / n / 1e3


def measure_round(worker, loader_pid, paths, raw_paths):
    """One round: plain, load and c-floor back to back; µs per file of each part."""
    n = len(paths)
    plain, _ = timed(lambda: read_plain(paths), 0, n)
    load_w, load_l = timed(lambda: read_load(worker, paths), loader_pid, n)
    floor_w, floor_l = timed(lambda: read_c_floor(worker, raw_paths), loader_pid, n)
    return dict(plain=plain, load_worker=load_w, load_loader=load_l,
                floor_worker=floor_w, floor_loader=floor_l)


def summarize(rounds):
    """(figure, each round's value, their median) rows; ratios are taken within each round."""
    def per_round(f):
        vals = [f(r) for r in rounds]
        return vals, statistics.median(vals)

    rows = [
        ("plain: CPU µs per file", *per_round(lambda r: r["plain"])),
        ("load: worker µs per entry", *per_round(lambda r: r["load_worker"])),
        ("c-floor: worker µs per entry", *per_round(lambda r: r["floor_worker"])),
        ("load - c-floor: our Python per entry, µs", *per_round(
            lambda r: r["load_worker"] - r["floor_worker"])),
        ("load: loader µs per file", *per_round(lambda r: r["load_loader"])),
        ("load: (worker + loader) ÷ plain", *per_round(
            lambda r: (r["load_worker"] + r["load_loader"]) / r["plain"])),
        ("c-floor: (worker + loader) ÷ plain", *per_round(
            lambda r: (r["floor_worker"] + r["floor_loader"]) / r["plain"])),
    ]
    return rows


def fmt_rows(rows):
    lines = ["| figure | each round | median |", "| --- | --- | ---: |"]
    for name, vals, m in rows:
        lines.append(f"| {name} | {', '.join(f'{v:.2f}' for v in vals)} | **{m:.2f}** |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=20000, help="files (data/bench-N, made if missing)")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data", help="dataset folder (default data/bench-N)")
    args = ap.parse_args()
    import make_dataset
    import asyncload
    data = args.data or os.path.join(REPO, "data", f"bench-{args.n}")
    manifest = make_dataset.make(data, args.n, args.seed)
    paths = [os.path.join(data, rel) for rel, _ in manifest["files"]]
    random.Random(args.seed * 7919).shuffle(paths)
    raw_paths = [os.fsencode(p) for p in paths]
    read_plain(paths)  # into the page cache
    max_size = (manifest["max_bytes"] + (1 << 20)) & ~((1 << 20) - 1)
    rounds = []
    with asyncload.Loader(64, max_size, 1) as loader:
        worker = loader.get_worker_context(0)
        read_load(worker, paths[:1000])  # first touch of the buffers, outside the rounds
        for i in range(args.rounds):
            r = measure_round(worker, loader.pid, paths, raw_paths)
            rounds.append(r)
            print(f"round {i + 1}: plain {r['plain']:.2f}, load {r['load_worker']:.2f} + loader "
                  f"{r['load_loader']:.2f}, c-floor {r['floor_worker']:.2f} + loader "
                  f"{r['floor_loader']:.2f} µs per file", flush=True)
    rows = summarize(rounds)
    print(f"\n{args.n} cached files, one worker at depth 64 in this process, "
          f"{args.rounds} rounds (plain, load, c-floor back to back)\n")
    print(fmt_rows(rows))


if __name__ == "__main__":
    main()
