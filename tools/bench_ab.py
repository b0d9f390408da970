#!/usr/bin/env python3
"""A/B of two (or more) checkouts of asyncload in paired rounds: is a change faster?

    python3 tools/bench_ab.py --trees /tmp/before/python,python                  # warm, 20,000 files
    python3 tools/bench_ab.py --trees /tmp/before/python,python --slow-ms 2      # cold, on slowfs

Each tree is a folder that `import asyncload` should come from (a checkout's python/, its
extension built). Every round runs asyncload-qd64 (2 worker processes, depth 64) from each tree
and then a reference in the same minutes: two plain reader processes (procs-2) when warm,
the C thread pool (cpool-64, tools/threadread.c) on slowfs. A round's contenders run back to
back, so the ratio to the round's own reference cancels most of this machine's drift, which moves
a single figure by 10-30 % over minutes; the report gives every round's ratio and their median,
and the median files/s and machine CPU per file of each. Set other variants through the
environment in a wrapper if a change is a switch rather than a tree.
"""

import argparse
import json
import os
import random
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

# one warm run in a fresh interpreter, so each tree's asyncload is the one imported
WARM_CHILD = r"""
import json, sys
from asyncload._contenders import run_contender
paths = open(sys.argv[2]).read().split("\n")
for p in paths:
    with open(p, "rb") as f:
        f.read()
out = run_contender(paths, dict(procs=2, qd=64, max_file_size=64 << 20, kind=sys.argv[1]))
print(json.dumps([out["files"] / out["wall"], out["machine_cpu"] / out["files"] * 1e6]))
"""


def warm_round(trees, list_path):
    """files/s and machine CPU per file of each tree, then of procs-2."""
    out = {}
    for name, tree in list(trees.items()) + [("procs-2", trees[next(iter(trees))])]:
        kind = "procs" if name == "procs-2" else "asyncload"
        env = dict(os.environ, PYTHONPATH=tree)
        p = subprocess.run([sys.executable, "-c", WARM_CHILD, kind, list_path], env=env,
                           capture_output=True, text=True)
        if p.returncode:
            raise RuntimeError(f"{name}: {p.stderr.strip()[-2000:]}")
        out[name] = json.loads(p.stdout.strip().splitlines()[-1])
    return out


def slow_setup(args):
    sys.path.insert(0, HERE)
    import bench_slow
    ds = bench_slow.prepare(args.out, args.n, 0)
    return dict(bench_slow=bench_slow, ds=ds,
                ns=argparse.Namespace(out=args.out, seq_files=300, jitter=0.0, timeout=600))


def slow_round(trees, args, ctx):
    """files/s and machine CPU per file of each tree, then of cpool-64, each cold on slowfs."""
    bs = ctx["bench_slow"]
    out = {}
    plan = [(name, dict(name=name, kind="asyncload", procs=2, qd=64, inflight=128), tree)
            for name, tree in trees.items()]
    plan.append(("cpool-64", dict(name="cpool-64", kind="cpool", threads=64, inflight=64), None))
    for name, c, tree in plan:
        if tree:
            os.environ["PYTHONPATH"] = tree   # the contender's child imports from here
        r = bs.run_one(c, ctx["ns"], args.slow_ms, ctx["ds"])
        out[name] = [r["files_s"], r["cpu_us_per_file"]]
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trees", required=True,
                    help="comma-separated folders to import asyncload from (A,B,...)")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--n", type=int, help="files (default 20000 warm, 3000 on slowfs)")
    ap.add_argument("--slow-ms", type=float, default=0.0,
                    help="cold on slowfs at this latency per operation (0: warm page cache)")
    ap.add_argument("--out", default=os.path.join(REPO, "bench-out", "ab"))
    args = ap.parse_args()
    trees = {f"asyncload[{t}]": os.path.abspath(t) for t in args.trees.split(",") if t}
    os.makedirs(args.out, exist_ok=True)
    args.n = args.n or (3000 if args.slow_ms else 20000)
    sys.path.insert(0, os.path.join(REPO, "tests", "python"))
    if args.slow_ms:
        ctx = slow_setup(args)
        ref = "cpool-64"
    else:
        sys.path.insert(0, HERE)
        import make_dataset
        data = os.path.join(REPO, "data", f"bench-{args.n}")
        manifest = make_dataset.make(data, args.n, 0)
        order = [os.path.join(data, rel) for rel, _ in manifest["files"]]
        random.Random(1).shuffle(order)
        list_path = os.path.join(args.out, "warm-list.txt")
        with open(list_path, "w") as f:
            f.write("\n".join(order))
        ref = "procs-2"
    rounds = []
    for i in range(args.rounds):
        r = slow_round(trees, args, ctx) if args.slow_ms else warm_round(trees, list_path)
        rounds.append(r)
        print(f"round {i + 1}: " + ", ".join(f"{k} {v[0]:,.0f} files/s" for k, v in r.items()),
              flush=True)
    what = f"cold on slowfs at {args.slow_ms:g} ms" if args.slow_ms else "warm page cache"
    print(f"\n{args.n} files, {what}, {args.rounds} paired rounds\n")
    print(f"| contender | files/s (median) | machine CPU µs/file (median) | ÷ {ref}, each round | median |")
    print("| --- | ---: | ---: | --- | ---: |")
    for name in list(trees) + [ref]:
        fs = statistics.median(r[name][0] for r in rounds)
        cpu = statistics.median(r[name][1] for r in rounds)
        if name == ref:
            print(f"| {name} | {fs:,.0f} | {cpu:.1f} | – | – |")
            continue
        ratios = [r[name][0] / r[ref][0] for r in rounds]
        print(f"| {name} | {fs:,.0f} | {cpu:.1f} | {', '.join(f'{x:.2f}' for x in ratios)} | "
              f"{statistics.median(ratios):.3f} |")


if __name__ == "__main__":
    main()
