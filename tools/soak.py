#!/usr/bin/env python3
"""Soak test for asyncload: many worker processes hammer one loader for a
fixed time with a random mix of good, missing and oversize paths and ranges;
every answer is checked against the file's checksum, every request must be
answered exactly once, and the descriptors and memory of the loader and of
the workers must not grow.

    python3 tools/soak.py --seconds 600                 # the long run
    python3 tools/soak.py --seconds 10 --json out.json  # what CI runs (via pytest)

Exit status 0 when nothing was lost, duplicated, mismatched or leaked.
tests/python/test_soak.py imports run() from here.
"""

from __future__ import annotations

import argparse
import collections
import errno
import json
import multiprocessing as mp
import os
import random
import shutil
import sys
import tempfile
import time
import zlib
from typing import Any, Dict, List, Optional, Tuple

try:
    import asyncload
except ImportError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
    import asyncload

# Fractions of the request mix (the rest are whole good files).
P_RANGE, P_MISSING, P_OVERSIZE, P_BIG_RANGE = 0.15, 0.05, 0.05, 0.02


# ---------------------------------------------------------------- dataset


def make_dataset(root: str, n_files: int, max_file_size: int, seed: int) -> Dict[str, Any]:
    """Good files (sizes 0 .. max_file_size, edge sizes included), files
    just and far above the limit, and names that do not exist."""
    os.makedirs(root, exist_ok=True)
    rng = random.Random(seed)
    edge = [0, 1, 4095, 4096, 4097, max_file_size - 1, max_file_size]
    good: Dict[str, bytes] = {}
    for i in range(n_files):
        size = edge[i] if i < len(edge) else rng.randrange(max_file_size)
        p = os.path.join(root, f"good{i:05d}.bin")
        data = rng.randbytes(size)
        with open(p, "wb") as f:
            f.write(data)
        good[p] = data
    oversize = []
    for i, size in enumerate((max_file_size + 1, max_file_size + 4096, 3 * max_file_size)):
        p = os.path.join(root, f"over{i}.bin")
        with open(p, "wb") as f:
            f.write(rng.randbytes(size))
        oversize.append(p)
    missing = [os.path.join(root, f"missing{i}.bin") for i in range(16)]
    return {"good": good, "oversize": oversize, "missing": missing,
            "crc": {p: zlib.crc32(d) for p, d in good.items()}}


# ---------------------------------------------------------------- /proc sampling


def proc_sample(pid: Any = "self") -> Dict[str, int]:
    """Open descriptors and anonymous (heap) memory of a process."""
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    rss_anon = rss_shmem = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                rss_anon = int(line.split()[1]) * 1024
            elif line.startswith("RssShmem:"):
                rss_shmem = int(line.split()[1]) * 1024
    return {"fds": fds, "rss_anon": rss_anon, "rss_shmem": rss_shmem}


def settled_fds(pid: int) -> int:
    """Open descriptors of pid once the count holds still (the loader closes
    the files of answered requests a moment after answering)."""
    last, same = len(os.listdir(f"/proc/{pid}/fd")), 0
    for _ in range(200):
        if same >= 3:
            break
        time.sleep(0.01)
        n = len(os.listdir(f"/proc/{pid}/fd"))
        same, last = (same + 1, n) if n == last else (0, n)
    return last


# ---------------------------------------------------------------- one worker


def _range_length(offset: int, max_file_size: int) -> int:
    """A length that varies with the offset, so ranges of one file differ."""
    return 1 + (offset * 2654435761) % max_file_size


def worker_main(wid: int, worker: asyncload.Worker, ds: Dict[str, Any], max_file_size: int,
                start_at: float, warm_at: float, stop_at: float, seed: int, out: Any) -> None:
    rng = random.Random(seed * 1000 + wid)
    good = sorted(ds["good"])
    contents = ds["good"]
    crc = ds["crc"]
    # tag (the request's index) -> the answer it must get, until answered
    expect: Dict[int, Tuple[str, Any]] = {}
    st = collections.Counter()
    problems: List[str] = []
    samples: Dict[str, Any] = {}

    def choose() -> Tuple[str, int, Optional[int], Tuple[str, Any]]:
        x = rng.random()
        if x < P_MISSING:
            return rng.choice(ds["missing"]), 0, None, ("err", errno.ENOENT)
        x -= P_MISSING
        if x < P_OVERSIZE:
            return rng.choice(ds["oversize"]), 0, None, ("err", errno.EFBIG)
        x -= P_OVERSIZE
        if x < P_BIG_RANGE:
            p = rng.choice(good)
            return p, 1 + rng.randrange(1 << 20), max_file_size + 1, ("err", errno.EFBIG)
        x -= P_BIG_RANGE
        p = rng.choice(good)
        if x < P_RANGE and len(contents[p]) > 0:
            off = rng.randrange(len(contents[p]) + 16)  # sometimes past the end
            n = _range_length(off, max_file_size)
            return p, off, n, ("crc", zlib.crc32(contents[p][off:off + n]))
        return p, 0, None, ("crc", crc[p])

    def requests() -> Any:
        """Random requests until stop_at; the k-th one gets tag k from load()."""
        tag = 0
        while True:
            now = time.time()
            if not samples.get("warm") and now >= warm_at:
                samples["warm"] = proc_sample()
            if now >= stop_at:
                return
            p, off, n, exp = choose()
            expect[tag] = exp
            tag += 1
            st["requested"] += 1
            yield (p, off, n)

    def check(e: asyncload.Entry) -> None:
        key = (e.tag, e.path, e.offset)
        want_answer = expect.pop(e.tag, None)
        if want_answer is None:
            problems.append(f"unexpected or duplicate answer {key}")
            st["duplicates"] += 1
            return
        st["answered"] += 1
        kind, want = want_answer
        if kind == "err":
            if e.error != want:
                st["mismatches"] += 1
                problems.append(f"{key}: errno {e.error}, want {want}")
            else:
                st["errno_" + errno.errorcode[want]] += 1
            return
        if e.error:
            st["mismatches"] += 1
            problems.append(f"{key}: errno {e.error}, want data")
            return
        view = e.data
        st["bytes"] += len(view)
        if e.size != len(view) or zlib.crc32(view) != want:
            st["mismatches"] += 1
            problems.append(f"{key}: checksum differs (size {e.size})")
        else:
            st["ok"] += 1
        del view

    try:
        w = worker
        while time.time() < start_at:
            time.sleep(0.005)
        # load() keeps the queue full until requests() stops, then hands
        # back everything still in flight: each answer must come back.
        try:
            for e in w.load(requests(), timeout=30):
                with e:
                    check(e)
        except TimeoutError:
            pass
        st["lost"] = len(expect)
        if st["lost"]:
            problems.append(f"{st['lost']} requests never answered, e.g. tags {list(expect)[:3]}")
        if w.try_get() is not None:
            st["duplicates"] += 1
            problems.append("an answer after everything was answered")
        samples["end"] = proc_sample()
    except BaseException as exc:  # noqa: BLE001 - reported to the parent
        problems.append(f"worker {wid} crashed: {exc!r}")
        st["crashed"] += 1
    out.put({"wid": wid, "stats": dict(st), "problems": problems[:20], "samples": samples})


def _child(wid: int, worker: asyncload.Worker, *args: Any) -> None:
    worker_main(wid, worker, *args)


# ---------------------------------------------------------------- the run


def run(seconds: float, workers: int = 8, queue_depth: int = 128, n_files: int = 256,
        max_file_size: int = 256 * 1024, seed: int = 1, directory: Optional[str] = None,
        start_method: str = "fork", rss_slack: int = 16 << 20, log: Any = None) -> Dict[str, Any]:
    """Runs the soak; returns the summary (summary["ok"] says if it passed)."""
    say = log or (lambda *_: None)
    tmp = None
    if directory is None:
        tmp = directory = tempfile.mkdtemp(prefix="asyncload-soak-")
    try:
        ds = make_dataset(directory, n_files, max_file_size, seed)
        say(f"dataset: {len(ds['good'])} files in {directory}")
        ctx = mp.get_context(start_method)
        loader = asyncload.Loader(queue_depth, max_file_size, workers)
        lpid = loader.spawn_loader()
        # Descriptors are compared idle to idle: while busy the loader also
        # holds the files it is reading (up to one per open-file slot).
        loader_idle_fds = settled_fds(lpid)
        q = ctx.Queue()
        t0 = time.time()
        start_at = t0 + (0.3 if start_method == "fork" else 3.0)
        warm_at = start_at + min(2.0, seconds * 0.2)
        stop_at = start_at + seconds
        procs = [ctx.Process(target=_child, daemon=True,
                             args=(i, loader.get_worker_context(i), ds, max_file_size,
                                   start_at, warm_at, stop_at, seed, q))
                 for i in range(workers)]
        for p in procs:
            p.start()
        loader_samples: Dict[str, Any] = {}
        while time.time() < warm_at:
            time.sleep(0.05)
        loader_samples["warm"] = proc_sample(lpid)
        results = []
        for _ in procs:
            results.append(q.get(timeout=seconds + 120))
        loader_samples["end"] = proc_sample(lpid)
        loader_end_fds = settled_fds(lpid)
        for p in procs:
            p.join(30)
        exitcodes = [p.exitcode for p in procs]
        elapsed = time.time() - start_at
        loader.close()
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)

    total = collections.Counter()
    problems: List[str] = []
    growth = []
    for r in sorted(results, key=lambda r: r["wid"]):
        total.update(r["stats"])
        problems += r["problems"]
        s = r["samples"]
        if "warm" in s and "end" in s:
            growth.append({"who": f"worker{r['wid']}",
                           "fds": s["end"]["fds"] - s["warm"]["fds"],
                           "rss_anon": s["end"]["rss_anon"] - s["warm"]["rss_anon"]})
    growth.append({"who": "loader",
                   "fds": loader_end_fds - loader_idle_fds,
                   "rss_anon": loader_samples["end"]["rss_anon"] - loader_samples["warm"]["rss_anon"]})
    for g in growth:
        if g["fds"] != 0:
            problems.append(f"{g['who']}: {g['fds']:+d} descriptors")
        if g["rss_anon"] > rss_slack:
            problems.append(f"{g['who']}: heap grew {g['rss_anon'] >> 10} KiB")
    if any(c != 0 for c in exitcodes):
        problems.append(f"worker exit codes {exitcodes}")
    for k in ("mismatches", "duplicates", "lost", "crashed"):
        total.setdefault(k, 0)
    summary = {
        "command": f"tools/soak.py --seconds {seconds} --workers {workers} "
                   f"--queue-depth {queue_depth} --files {n_files} --max-file-size {max_file_size} "
                   f"--seed {seed} --start-method {start_method}",
        "seconds": round(elapsed, 2),
        "workers": workers,
        "queue_depth": queue_depth,
        "requested": total["requested"],
        "answered": total["answered"],
        "answers_per_s": round(total["answered"] / elapsed) if elapsed > 0 else 0,
        "ok": not problems and total["requested"] == total["answered"] and total["requested"] > 0,
        "data_ok": total["ok"],
        "enoent": total["errno_ENOENT"],
        "efbig": total["errno_EFBIG"],
        "mib_checked": round(total["bytes"] / (1 << 20), 1),
        "mismatches": total["mismatches"],
        "duplicates": total["duplicates"],
        "lost": total["lost"],
        "crashed": total["crashed"],
        "growth": growth,
        "loader_samples": loader_samples,
        "problems": problems[:50],
    }
    return summary


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--queue-depth", type=int, default=128)
    ap.add_argument("--files", type=int, default=256)
    ap.add_argument("--max-file-size", type=int, default=256 * 1024)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--dir", default=None, help="where to make the dataset (default: a temp dir)")
    ap.add_argument("--start-method", default="fork", choices=["fork", "spawn", "forkserver"])
    ap.add_argument("--json", default=None, help="write the summary here too")
    a = ap.parse_args(argv)
    s = run(a.seconds, a.workers, a.queue_depth, a.files, a.max_file_size, a.seed, a.dir,
            a.start_method, log=lambda m: print(m, file=sys.stderr))
    text = json.dumps(s, indent=2)
    print(text)
    if a.json:
        with open(a.json, "w") as f:
            f.write(text + "\n")
    return 0 if s["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
