#!/usr/bin/env python3
"""The slow-storage benchmark: readers on tools/slowfs, a FUSE mirror that adds a set latency
to every lookup, open and read, as network storage (NFS, Lustre, s3fs, gcsfuse) does.

    python3 tools/bench_slow.py                  # 3,000 files, latencies 0.5, 2, 10 ms
    python3 tools/bench_slow.py --quick          # 600 files, 2 ms (a minute or so)
    python3 tools/bench_slow.py --latencies 2 --n 1000

Contenders, on the same shuffled list through the same mount, each cold (a fresh slowfs
mount per contender, so nothing is in the kernel's FUSE caches, and the page cache dropped):
  python-seq        open().read() in a loop (on the first --seq-files files only: at 10 ms it
                    would take minutes; files/s is what counts)
  threads-T         ThreadPoolExecutor(T) doing open().read(), T in --threads
  procs-N           N reader processes, each reading its share
  cpool-T           tools/threadread.c: T pthreads doing open/read/close, no Python
  asyncload-qdQ     2 worker processes (--procs), Q requests in flight each, Worker.load()
The processes are run by tools/bench.py's child runner (same code, same timing rules).

Little's-law bound: files/s <= requests in flight / time per file. Time per file is measured,
not guessed: slowfs counts the operations it answered during the contender's run
(lookups+getattrs, opens, reads, ...), so ops/file = ops / files and time per file =
ops/file x latency (the operations of one file happen one after another). In flight is
threads, processes, or workers x queue depth. The bound ignores CPU: on a few cores the
daemon's own CPU caps every reader first, which is why the C pool is reported too.

Writes bench-out/bench_slow.json and prints a table with ratios against asyncload-qd64.
"""

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
import types

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(REPO, "tests", "python"))

import bench  # noqa: E402  (its child runner, cache dropper, machine info)
from asyncload._contenders import machine_busy  # noqa: E402
import make_dataset  # noqa: E402
from slowfs import SlowFS, build as build_slowfs  # noqa: E402

MiB = 1 << 20
log = bench.log


def find_threadread(out_dir):
    """The C thread pool, tools/threadread.c, built into out_dir with -O2 (bench.build_tool)."""
    exe = bench.build_tool(out_dir, "threadread", ["-lpthread"], " (the C thread pool)")
    if exe is None:
        raise RuntimeError("cannot build tools/threadread.c")
    return exe


def run_cpool(exe, threads, list_path, timeout):
    p = subprocess.run([exe, "-q", "-t", str(threads), list_path], capture_output=True,
                       text=True, timeout=timeout)
    if not p.stdout.strip():
        raise RuntimeError(p.stderr.strip()[-2000:] or f"exit status {p.returncode}")
    r = json.loads(p.stdout)
    return dict(bytes=r["bytes"], files=r["files"], errors=r["errors"], wall=r["seconds"])


def contenders(args):
    out = [dict(name="python-seq", kind="seq", inflight=1, seq=True)]
    out += [dict(name=f"threads-{t}", kind="threads", threads=t, inflight=t)
            for t in args.threads]
    out += [dict(name=f"procs-{p}", kind="procs", procs=p, inflight=p) for p in args.reader_procs]
    out += [dict(name=f"cpool-{t}", kind="cpool", threads=t, inflight=t) for t in args.cpool]
    out += [dict(name=f"asyncload-qd{q}", kind="asyncload", procs=args.procs, qd=q,
                 inflight=args.procs * q) for q in args.depths]
    q = 64 if 64 in args.depths else max(args.depths)
    out.append(dict(name=f"asyncload-threads-qd{q}", kind="asyncload", procs=args.procs, qd=q,
                    inflight=args.procs * q, engine="threads"))
    return out


def prepare(out, n, seed, data=None):
    """What every run on slowfs needs: the dataset (made if missing) and its shuffled order,
    the C pool and the slowfs daemon built with -O2 into out (not a build folder's, which may
    be build-san's ASan binaries), and the page-cache dropper."""
    data = os.path.abspath(data or os.path.join(REPO, "data", f"bench-{n}"))
    log(f"dataset {data} ({n} files, seed {seed})")
    manifest = make_dataset.make(data, n, seed)
    order = [rel for rel, _ in manifest["files"]]
    random.Random(seed * 7919).shuffle(order)
    os.environ.setdefault("ASYNCLOAD_SLOWFS", build_slowfs(out))
    return types.SimpleNamespace(
        data=data, manifest=manifest, order=order,
        want_bytes=dict((rel, size) for rel, size in manifest["files"]),
        max_size=(manifest["max_bytes"] + MiB) & ~(MiB - 1),
        cpool=find_threadread(out), cache=bench.Cache([os.path.join(data, rel) for rel in order]))


def run_one(c, args, latency, ds):
    """One contender, cold, on a fresh slowfs mount of ds (prepare()) at latency ms."""
    data, order, want_bytes, cache = ds.data, ds.order, ds.want_bytes, ds.cache
    mnt = os.path.join(args.out, "slowfs-mnt")
    paths = order[:args.seq_files] if c.get("seq") else order
    list_path = os.path.join(args.out, "slow-list.txt")
    with open(list_path, "w") as f:
        f.write("\n".join(os.path.join(mnt, rel) for rel in paths) + "\n")
    expect = sum(want_bytes[rel] for rel in paths)
    cache.drop()
    fs = SlowFS(data, mnt, latency_ms=latency, jitter_ms=args.jitter)
    with fs:
        before = fs.stats(settle=True)
        busy0 = machine_busy()
        if c["kind"] == "cpool":
            r = run_cpool(ds.cpool, c["threads"], list_path, args.timeout)
        else:
            spec = dict(c, list_path=list_path, max_file_size=ds.max_size)
            # no memory sampling: the C pool has none, and here CPU is what runs out
            r = bench.run_child(spec, args.out, args.timeout, sample_memory=False)
        # the machine's CPU over the contender's timed window where its child measured it
        # (not its Python start and imports), else over the whole C pool run
        busy = machine_busy() - busy0
        after = fs.stats(settle=True)
    ops = sum(after.get(k, 0) - before.get(k, 0)
              for k in ("getattr", "open", "read", "opendir", "readdir", "readlink", "statfs"))
    if r["bytes"] != expect and not r["errors"]:
        log(f"  {c['name']} read {r['bytes']} bytes, expected {expect}")
        r["errors"] = 1
    files_s = r["files"] / r["wall"]
    ops_per_file = ops / max(1, r["files"])
    per_file_s = ops_per_file * latency / 1000
    bound = c["inflight"] / per_file_s if per_file_s > 0 else float("inf")
    return dict(name=c["name"], latency_ms=latency, files=r["files"], bytes=r["bytes"],
                wall=r["wall"], files_s=files_s, errors=r["errors"], inflight=c["inflight"],
                ops=ops, ops_per_file=ops_per_file, per_file_ms=per_file_s * 1000,
                little_bound=bound, pct_of_bound=100 * files_s / bound,
                cpu_us_per_file=1e6 * r.get("machine_cpu", busy) / max(1, r["files"]))


def median_rows(runs):
    """One row per (latency, contender): the run with the median files/s (a failed run
    counts as 0, so a contender that fails in most rounds shows its failure), with every
    round's files/s beside it."""
    rows = []
    for key in dict.fromkeys((r["latency_ms"], r["name"]) for r in runs):
        rs = sorted((r for r in runs if (r["latency_ms"], r["name"]) == key),
                    key=lambda r: r.get("files_s", 0))
        row = dict(rs[(len(rs) - 1) // 2])
        row["rounds_files_s"] = [round(r.get("files_s", 0)) for r in rs]
        rows.append(row)
    return rows


def best_of(rows, lat, prefix):
    rs = [r for r in rows if r["latency_ms"] == lat and r["name"].startswith(prefix)
          and "error" not in r]
    return max(rs, key=lambda r: r["files_s"]) if rs else None


def fmt_summary(rows, ref):
    """The issue's ratios: the reference against the best Python pool, the best C pool and
    sequential reads, per latency (medians)."""
    lines = ["| latency | " + ref + " files/s | ÷ best Python pool | ÷ best C pool | ÷ sequential |",
             "| --- | ---: | ---: | ---: | ---: |"]
    for lat in sorted({r["latency_ms"] for r in rows}):
        a = next((r for r in rows if r["latency_ms"] == lat and r["name"] == ref
                  and "error" not in r), None)
        if not a:
            continue
        cells = []
        for prefix in ("threads-", "cpool-", "python-seq"):
            b = best_of(rows, lat, prefix)
            cells.append(f"{a['files_s'] / b['files_s']:.2f} ({b['name']})" if b else "-")
        lines.append(f"| {lat:g} ms | {a['files_s']:,.0f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def fmt_round_summary(runs, ref):
    """The same ratios taken within each round (the reference against that round's best
    Python pool, best C pool and sequential run), then the median over rounds: a round's
    contenders run back to back, so this cancels the machine's drift between rounds, which
    the medians of files/s above do not."""
    lines = ["| latency | ÷ best Python pool | ÷ best C pool | ÷ sequential |",
             "| --- | --- | --- | --- |"]
    ok = [r for r in runs if "error" not in r]
    for lat in sorted({r["latency_ms"] for r in ok}):
        cells = []
        for prefix in ("threads-", "cpool-", "python-seq"):
            ratios = []
            for rnd in sorted({r["round"] for r in ok if r["latency_ms"] == lat}):
                same = [r for r in ok if r["latency_ms"] == lat and r["round"] == rnd]
                a = next((r for r in same if r["name"] == ref), None)
                bs = [r for r in same if r["name"].startswith(prefix)]
                if a and bs:
                    ratios.append(a["files_s"] / max(r["files_s"] for r in bs))
            cells.append(", ".join(f"{x:.2f}" for x in ratios)
                         + f": **{statistics.median(ratios):.2f}**" if ratios else "-")
        lines.append(f"| {lat:g} ms | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def fmt_table(rows, ref):
    lines = []
    for lat in sorted({r["latency_ms"] for r in rows}):
        rs = [r for r in rows if r["latency_ms"] == lat]
        a = next((r for r in rs if r["name"] == ref and "error" not in r), None)
        lines.append(f"\n**{lat:g} ms per operation** (ratio = files/s ÷ {ref})\n")
        lines.append("| contender | files/s | ratio | in flight | ops/file | ms/file "
                     "| Little bound files/s | % of bound | CPU us/file | errors |")
        lines.append("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for r in rs:
            if "error" in r:
                lines.append(f"| {r['name']} | failed: {r['error'][-80:]} | | | | | | | | |")
                continue
            ratio = f"{r['files_s'] / a['files_s']:.2f}" if a else "-"
            name = f"**{r['name']}**" if r["name"] == ref else r["name"]
            lines.append(f"| {name} | {r['files_s']:,.0f} | {ratio} | {r['inflight']} | "
                         f"{r['ops_per_file']:.2f} | {r['per_file_ms']:.1f} | "
                         f"{r['little_bound']:,.0f} | {r['pct_of_bound']:.0f} | "
                         f"{r.get('cpu_us_per_file', 0):.0f} | {r['errors']} |")
    return "\n".join(lines)


def chart(rows, png_path):
    """files/s of every contender at each latency (log scale), asyncload in orange."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    lats = sorted({r["latency_ms"] for r in rows})
    fig, axes = plt.subplots(1, len(lats), figsize=(5 * len(lats), 4.5), squeeze=False)
    for ax, lat in zip(axes[0], lats):
        rs = [r for r in rows if r["latency_ms"] == lat and r.get("files_s")]
        names = [r["name"] for r in rs]
        ax.barh(names, [r["files_s"] for r in rs],
                color=["#ef8636" if n.startswith("asyncload") else "#3b75af" for n in names])
        ax.set_xscale("log")
        ax.set_title(f"{lat:g} ms per operation, cold")
        ax.set_xlabel("files/s (log)")
        ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(png_path, dpi=90)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", help="dataset folder (default data/bench-N, made if missing)")
    ap.add_argument("--n", type=int, default=3000, help="files (default 3000)")
    ap.add_argument("--quick", action="store_true",
                    help="600 files, 2 ms, seq on 100 files (unless given explicitly)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--png", help="write a chart (matplotlib) here")
    ap.add_argument("--latencies", default=None, help="ms per operation (default 0.5,2,10)")
    ap.add_argument("--jitter", type=float, default=0.0, help="ms of uniform jitter")
    ap.add_argument("--threads", default="16,64,128,256", help="Python thread pools")
    ap.add_argument("--reader-procs", default="2,16", help="reader process counts")
    ap.add_argument("--cpool", default="64,256", help="C thread pool sizes")
    ap.add_argument("--procs", type=int, default=2, help="asyncload worker processes")
    ap.add_argument("--depths", default="16,64,256", help="asyncload queue depths")
    ap.add_argument("--seq-files", type=int, default=None,
                    help="files python-seq reads (default 300; 100 with --quick)")
    ap.add_argument("--ref", default="asyncload-qd64", help="the row ratios divide by")
    ap.add_argument("--only", help="regex: run only matching contenders")
    ap.add_argument("--repeat", type=int, default=1,
                    help="rounds of every contender (interleaved); tables give medians")
    ap.add_argument("--timeout", type=int, default=300, help="per contender, seconds")
    ap.add_argument("--out", default=os.path.join(REPO, "bench-out"), help="output folder")
    ap.add_argument("--report", metavar="JSON",
                    help="print the tables of an earlier run's JSON report (with --png, its "
                         "chart) and exit")
    ap.add_argument("--json", help="JSON path (default OUT/bench_slow.json)")
    args = ap.parse_args()
    if args.report:
        with open(args.report) as f:
            report = json.load(f)
        print(fmt_report(report))
        if args.png:
            chart(report["rows"], args.png)
        return

    if args.quick:
        if "--n" not in sys.argv:
            args.n = 600
        args.latencies = args.latencies or "2"
        args.seq_files = args.seq_files or 100
    latencies = [float(x) for x in (args.latencies or "0.5,2,10").split(",") if x]
    args.seq_files = args.seq_files or 300
    for k in ("threads", "reader_procs", "cpool", "depths"):
        setattr(args, k, [int(x) for x in getattr(args, k).split(",") if x])
    os.makedirs(args.out, exist_ok=True)
    json_path = args.json or os.path.join(args.out, "bench_slow.json")
    t_start = time.monotonic()

    ds = prepare(args.out, args.n, args.seed, args.data)
    data, manifest = ds.data, ds.manifest
    log(f"cold: a fresh slowfs mount per contender, page cache dropped with {ds.cache.method}")
    plan = contenders(args)
    if args.only:
        import re
        plan = [c for c in plan if re.search(args.only, c["name"])]
    if not bench.asyncload_importable():
        plan = [c for c in plan if c["kind"] != "asyncload"]

    runs = []
    step, total = 0, len(latencies) * len(plan) * args.repeat
    for lat in latencies:
        # rounds interleave the contenders, so a slow spell of the machine hits them all
        for rep in range(args.repeat):
            for c in plan:
                step += 1
                try:
                    r = run_one(c, args, lat, ds)
                    log(f"[{step}/{total}] {lat:g} ms {c['name']:16s} {r['files_s']:8,.0f} "
                        f"files/s  {r['ops_per_file']:.2f} ops/file  "
                        f"{r['pct_of_bound']:.0f}% of bound  {r['cpu_us_per_file']:.0f} us CPU/file")
                except Exception as e:      # one broken contender must not sink the run
                    r = dict(name=c["name"], latency_ms=lat, error=str(e))
                    log(f"[{step}/{total}] {lat:g} ms {c['name']}: FAILED: {str(e)[-300:]}")
                r["round"] = rep
                runs.append(r)
    rows = median_rows(runs)

    info = bench.machine_info(data)
    wall = time.monotonic() - t_start
    report = dict(command="python3 tools/bench_slow.py " + " ".join(sys.argv[1:]),
                  machine=info, cache_drop=ds.cache.method,
                  dataset=dict(path=data, n=args.n, seed=args.seed,
                               total_bytes=manifest["total_bytes"],
                               mean_bytes=manifest["mean_bytes"]),
                  settings=dict(latencies=latencies, jitter=args.jitter, threads=args.threads,
                                reader_procs=args.reader_procs, cpool=args.cpool,
                                procs=args.procs, depths=args.depths,
                                seq_files=args.seq_files, ref=args.ref),
                  repeat=args.repeat, rows=rows, runs=runs, wall_s=wall)
    with open(json_path, "w") as f:
        json.dump(report, f, indent=1)
    print(fmt_report(report))
    if args.png:
        chart(rows, args.png)
        log(f"wrote {args.png}")
    log(f"wrote {json_path} in {wall:.0f} s")


def fmt_report(report):
    """The tables of a run, from its JSON report (what main() prints, and --report)."""
    info, ds, ref = report["machine"], report["dataset"], report["settings"]["ref"]
    rows, runs, repeat = report["rows"], report["runs"], report["repeat"]
    text = (f"Command: `{report['command'].strip()}`  \n"
            f"Dataset: {ds['n']} files, {ds['total_bytes'] / 1e6:.0f} MB, "
            f"{info.get('nproc')} cores, kernel {info.get('kernel')}\n"
            + (f"Medians of {repeat} interleaved rounds.\n\n" if repeat > 1 else "\n")
            + fmt_summary(rows, ref) + "\n")
    if repeat > 1:
        text += ("\nEach round's own ratios, and their median:\n\n"
                 + fmt_round_summary(runs, ref) + "\n")
    return text + fmt_table(rows, ref) + f"\n\nWall time: {report['wall_s']:.0f} s\n"


if __name__ == "__main__":
    main()
