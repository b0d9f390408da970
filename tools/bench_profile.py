#!/usr/bin/env python3
"""Profile asyncload under the benchmark's load: where do the loader and the workers spend time?

    python3 tools/bench_profile.py --quick            # warm, 2 workers, queue depth 64
    python3 tools/bench_profile.py --cold --seconds 20

Runs the same worker loop as tools/bench.py (N processes, each keeping its queue full) over the
dataset again and again for --seconds, and while it runs records
  - the loader process with `perf record -g` (kernel and C stacks), reported with `perf report`,
  - one worker with `py-spy record` (Python stacks, --native for the cffi calls), if installed,
  - system-call counts of the loader and of one worker with `strace -c -f`, one pass each.
Outputs land in bench-out/profile/. The point is the split: if the loader thread is at 100 % of a
core while workers wait, the loader is the bottleneck; if workers are busy in Python, it is the
binding.
"""

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)


def worker_loop(ctx, share, qd, stop_at, conn):
    import asyncload
    w = ctx
    w.try_get()
    conn.send(os.getpid())
    files = 0
    while time.monotonic() < stop_at:
        # Worker.load(): the same queue-filling loop as tools/bench.py measures
        for e in w.load(share):
            len(e.data)
            e.release()
            files += 1
    conn.send(files)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--quick", action="store_true", help="2,000 files")
    ap.add_argument("--cold", action="store_true", help="drop the page cache before each pass "
                    "(only the first pass is cold: this just drops once)")
    ap.add_argument("--procs", type=int, default=2)
    ap.add_argument("--qd", type=int, default=64)
    ap.add_argument("--dispatch-n", type=int, default=1)
    ap.add_argument("--idle-iters", type=int, default=0)
    ap.add_argument("--seconds", type=float, default=8)
    ap.add_argument("--out", default=os.path.join(REPO, "bench-out", "profile"))
    args = ap.parse_args()
    if args.quick:
        args.n = 2000
    import multiprocessing as mp
    import asyncload
    import make_dataset
    data = os.path.join(REPO, "data", f"bench-{args.n}")
    m = make_dataset.make(data, args.n, 0)
    paths = [os.path.join(data, rel) for rel, _ in m["files"]]
    random.Random(1).shuffle(paths)
    os.makedirs(args.out, exist_ok=True)
    if args.cold:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3")
    else:
        for p in paths:
            with open(p, "rb") as f:
                f.read()
    loader = asyncload.Loader(args.qd, 64 << 20, args.procs, dispatch_n=args.dispatch_n,
                              idle_iters=args.idle_iters)
    lpid = loader.spawn_loader()
    ctx = mp.get_context("fork")
    stop_at = time.monotonic() + args.seconds + 1
    procs, conns = [], []
    for i in range(args.procs):
        a, b = ctx.Pipe()
        p = ctx.Process(target=worker_loop, args=(loader.get_worker_context(i),
                                                  paths[i::args.procs], args.qd, stop_at, b))
        p.start()
        procs.append(p)
        conns.append(a)
    wpids = [c.recv() for c in conns]
    print(f"loader {lpid}, workers {wpids}", file=sys.stderr)
    tools = []
    t0 = time.monotonic()
    dur = str(max(1, int(args.seconds - 1)))
    if shutil.which("perf"):
        tools.append(subprocess.Popen(
            ["perf", "record", "-g", "-o", os.path.join(args.out, "loader.perf.data"),
             "-p", str(lpid), "--", "sleep", dur],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    if shutil.which("py-spy"):
        tools.append(subprocess.Popen(
            ["py-spy", "record", "--native", "-r", "200", "-d", dur, "-f", "raw", "-o",
             os.path.join(args.out, "worker0.pyspy.txt"), "-p", str(wpids[0])],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    cpu0 = {p: _cpu(p) for p in [lpid] + wpids}
    for t in tools:
        t.wait()
    el = time.monotonic() - t0
    cpu = {p: (_cpu(p) - cpu0[p]) / el * 100 for p in cpu0}
    files = sum(c.recv() for c in conns)
    for p in procs:
        p.join()
    loader.shutdown()
    loader.close()
    print(f"files read: {files} in ~{args.seconds + 1:.0f} s ({files / (args.seconds + 1):,.0f}/s)")
    print(f"CPU while profiling (% of a core): loader {cpu[lpid]:.0f}, workers "
          + ", ".join(f"{cpu[p]:.0f}" for p in wpids))
    if shutil.which("perf") and os.path.exists(os.path.join(args.out, "loader.perf.data")):
        rep = subprocess.run(["perf", "report", "-i", os.path.join(args.out, "loader.perf.data"),
                              "--no-children", "--percent-limit", "1.5", "--stdio", "-g", "none"],
                             capture_output=True, text=True).stdout
        with open(os.path.join(args.out, "loader.perf.txt"), "w") as f:
            f.write(rep)
        print("loader, perf top symbols:")
        print("\n".join(l for l in rep.splitlines() if l.strip() and not l.startswith("#"))[:3000])
    raw = os.path.join(args.out, "worker0.pyspy.txt")
    if os.path.exists(raw):
        print("worker 0, py-spy: own-time by function (top 15)")
        print(_pyspy_top(raw, 15))


def _cpu(pid):
    with open(f"/proc/{pid}/stat") as f:
        x = f.read().rsplit(")", 1)[1].split()
    return (int(x[11]) + int(x[12])) / os.sysconf("SC_CLK_TCK")


def _pyspy_top(path, k):
    """Self time per leaf frame from py-spy's raw (collapsed stacks) output."""
    own, total = {}, 0
    with open(path) as f:
        for line in f:
            stack, _, n = line.rstrip().rpartition(" ")
            leaf = stack.split(";")[-1]
            own[leaf] = own.get(leaf, 0) + int(n)
            total += int(n)
    rows = sorted(own.items(), key=lambda x: -x[1])[:k]
    return "\n".join(f"{100 * n / total:5.1f}%  {leaf}" for leaf, n in rows)


if __name__ == "__main__":
    main()
