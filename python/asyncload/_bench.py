"""`asyncload bench DIR`: every way to get DIR's files into Python, measured on this machine.

One run reads the same shuffled list of the user's own files with: a plain sequential loop,
a thread pool (a few sizes; the best is reported), reader processes (DataLoader-style), and
asyncload on each engine this build has. It prints a table (files/s, MB/s, CPU per file,
ratio to asyncload), the filesystem and mount of DIR, the kernel and whether io_uring is
available, and the settings it recommends; optionally writes JSON and a PNG chart.

The contender runners and the page-cache evictor are in _contenders.py; this file owns the
command: which contenders to run, the table, the recommendation, the JSON and the chart.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
from typing import Any, Callable, Dict, List, Optional, Sequence

from ._contenders import EngineUnsupported, PageCache, run_contender

MiB = 1 << 20


# ------------------------------------------------------------------ the command

def _progress(total: int) -> Callable[[str, Optional[str]], None]:
    """A progress reporter over the contenders: tqdm or rich when installed, else lines on
    stderr. Called with (name, None) before a contender and (name, result text) after."""
    try:
        from tqdm import tqdm  # type: ignore[import-not-found]
        bar = tqdm(total=total, unit="run", file=sys.stderr, leave=False)

        def step_tqdm(name: str, done: Optional[str]) -> None:
            bar.set_description(name)
            if done is not None:
                bar.update(1)
                bar.write(f"  {name}: {done}", file=sys.stderr)
                if bar.n >= total:
                    bar.close()
        return step_tqdm
    except ImportError:
        pass
    try:
        from rich.console import Console  # type: ignore[import-not-found]
        console = Console(stderr=True)
        count = [0]

        def step_rich(name: str, done: Optional[str]) -> None:
            if done is not None:
                count[0] += 1
                console.print(f"[{count[0]}/{total}] {name}: {done}")
        return step_rich
    except ImportError:
        pass
    count = [0]

    def step_plain(name: str, done: Optional[str]) -> None:
        if done is None:
            print(f"bench: [{count[0] + 1}/{total}] {name} ...", file=sys.stderr, flush=True)
        else:
            count[0] += 1
            print(f"bench: [{count[0]}/{total}] {name}: {done}", file=sys.stderr, flush=True)
    return step_plain


def plan(procs: int, threads: Sequence[int], engines: Sequence[str], qd: int,
         max_file_size: int, cache_bytes: int = 0) -> List[Dict[str, Any]]:
    out: List[Dict[str, Any]] = [dict(name="python-seq", kind="seq", group="python")]
    for t in threads:
        out.append(dict(name=f"threads-{t}", kind="threads", threads=t, group="threads"))
    out.append(dict(name=f"procs-{procs}", kind="procs", procs=procs, group="procs"))
    for eng in engines:
        out.append(dict(name=f"asyncload-{eng}", kind="asyncload", procs=procs, qd=qd,
                        max_file_size=max_file_size, engine=eng, group="asyncload"))
    if cache_bytes:
        out.append(dict(name="asyncload-cache", kind="asyncload", procs=procs, qd=qd,
                        max_file_size=max_file_size, engine=None, group="asyncload",
                        cache_bytes=cache_bytes))
    return out


def recommend(rows: Dict[str, Dict[str, Any]], ref: Optional[str], procs: int, qd: int,
              max_bytes: int, fstype: str, cold: bool) -> Dict[str, Any]:
    """Settings to start from, with the reason for each."""
    network = fstype.split(".")[0] in ("nfs", "nfs4", "cifs", "smb3", "fuse", "ceph", "lustre",
                                       "gpfs", "9p", "virtiofs", "glusterfs")
    deep = cold or network
    depth = 128 if deep else qd
    mfs = max(MiB, (max_bytes + MiB - 1) // MiB * MiB)
    rec: Dict[str, Any] = dict(
        queue_depth=depth, n_workers=procs, max_file_size=mfs,
        why=("storage answers slowly (cold cache or network filesystem): more requests in "
             "flight hide its latency" if deep else
             f"cached data: queue depth {qd} keeps the loader busy"),
        engine=(rows[ref].get("engine") or ref.split("-", 1)[1]) if ref else None)
    return rec


def fmt_table(rows: Dict[str, Dict[str, Any]], ref: Optional[str], best_threads: Optional[str]
              ) -> str:
    head = ("contender", "files/s", "MB/s", "CPU us/file", "x asyncload")
    lines = [f"{head[0]:<22} {head[1]:>10} {head[2]:>9} {head[3]:>12} {head[4]:>12}"]
    refv = rows[ref]["files_s"] if ref and "error" not in rows[ref] else None
    for name, r in rows.items():
        if r["group"] == "threads" and name != best_threads:
            continue
        shown = f"{name} (best pool)" if name == best_threads else name
        if "error" in r:
            lines.append(f"{shown:<22} {'not run: ' + r['error'][:70]}")
            continue
        ratio = f"{r['files_s'] / refv:.2f}" if refv else "-"
        lines.append(f"{shown:<22} {r['files_s']:>10,.0f} {r['mb_s']:>9,.1f} "
                     f"{r['cpu_us_per_file']:>12,.0f} {ratio:>12}")
    return "\n".join(lines)


def chart(rows: Dict[str, Dict[str, Any]], path: str, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    names = [n for n, r in rows.items() if "error" not in r]
    fig, axes = plt.subplots(1, 2, figsize=(11, 0.45 * len(names) + 1.6))
    for ax, key, label in ((axes[0], "files_s", "files/s (higher is better)"),
                           (axes[1], "cpu_us_per_file", "CPU µs per file (lower is better)")):
        vals = [rows[n][key] for n in names]
        colors = ["#ef8636" if rows[n]["group"] == "asyncload" else "#3b75af" for n in names]
        bars = ax.barh(range(len(names)), vals, color=colors)
        for b, v in zip(bars, vals):
            ax.text(b.get_width(), b.get_y() + b.get_height() / 2, f" {v:,.0f}", va="center",
                    fontsize=8)
        ax.set_yticks(range(len(names)))
        ax.set_yticklabels(names if ax is axes[0] else [])
        ax.invert_yaxis()
        ax.set_xlabel(label)
        ax.grid(axis="x", alpha=0.3)
        ax.margins(x=0.2)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run_bench(args: argparse.Namespace) -> int:
    from . import __version__, _sysinfo
    from .cli import find_files

    root = args.dir
    if not os.path.isdir(root):
        print(f"asyncload bench: {root} is not a directory", file=sys.stderr)
        return 2
    found = find_files(root, args.ext)
    if not found:
        print(f"asyncload bench: no files under {root}", file=sys.stderr)
        return 2
    rng = random.Random(args.seed)
    rng.shuffle(found)      # training reads in a random order, and so do we
    paths = found[:args.files]
    sizes = []
    for p in paths:
        try:
            sizes.append(os.path.getsize(p))
        except OSError:
            sizes.append(0)
    total, max_bytes = sum(sizes), max(sizes)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
        os.cpu_count() or 1)
    procs = args.procs or max(2, min(4, cpus))
    threads = sorted({int(t) for t in args.threads.split(",") if t})
    mount = _sysinfo.mount_of(root)
    uring = _sysinfo.probe_io_uring()
    # every engine this build has that can run here
    have = _sysinfo.runnable_engines(uring)
    if args.engine == "all":
        engines = have
    else:
        engines = [args.engine]
    max_file_size = max(4096, (max_bytes + 4095) // 4096 * 4096)
    contenders = plan(procs, threads, engines, args.queue_depth, max_file_size, args.cache)
    cache = PageCache(paths)
    mode = "cold" if args.cold else "warm"
    cache_note = (f"cold: before each contender, {cache.describe()}" if args.cold
                  else "warm: every file read once before the runs (page cache filled)")
    print(f"asyncload {__version__} bench: {len(paths)} files under {root}, "
          f"{total / 1e6:,.1f} MB (mean {total / len(paths) / 1e3:,.1f} kB, "
          f"largest {max_bytes / 1e3:,.1f} kB)")
    print(f"filesystem: {mount['fstype']} ({mount['source']} mounted on {mount['mount']})")
    print(f"kernel {_sysinfo.platform.release()}; io_uring "
          + ("available" if uring["available"] else f"unavailable: {uring['reason']}"))
    print(f"cache: {cache_note}")
    print(f"{procs} processes for procs/asyncload rows, queue depth {args.queue_depth}, "
          f"{cpus} CPUs; load average {os.getloadavg()[0]:.1f}", flush=True)

    if not args.cold:
        cache.fill()
    step = _progress(len(contenders))
    rows: Dict[str, Dict[str, Any]] = {}
    for c in contenders:
        step(c["name"], None)
        if args.cold:
            cache.drop()
        row: Dict[str, Any] = dict(group=c["group"], kind=c["kind"])
        if c["kind"] == "asyncload" and c.get("engine") == "io_uring" and not uring["available"]:
            row["error"] = f"io_uring unavailable ({uring['reason']})"
            rows[c["name"]] = row
            step(c["name"], "skipped: " + row["error"])
            continue
        try:
            spec = dict(c)
            if c["kind"] == "asyncload" and "threads" not in have:
                # a build without engine= has only io_uring
                if c["engine"] == "threads":
                    raise EngineUnsupported("this build has no thread engine")
                spec["engine"] = None
            r = run_contender(paths, spec)
            row.update(r)
            row["files_s"] = r["files"] / r["wall"]
            row["mb_s"] = r["bytes"] / r["wall"] / 1e6
            row["cpu_us_per_file"] = 1e6 * r["cpu"] / max(1, r["files"])
            if r["bytes"] != total and not r["errors"]:
                row["note"] = f"read {r['bytes']} bytes, expected {total} (files changed?)"
            hits = (f", {r['cache']['hits']} of {r['files']} from the cache"
                    if "cache" in r else "")
            step(c["name"], f"{row['files_s']:,.0f} files/s, {row['mb_s']:,.1f} MB/s, "
                            f"{row['cpu_us_per_file']:,.0f} us CPU/file{hits}")
        except Exception as exc:     # one contender failing must not sink the run
            row["error"] = f"{type(exc).__name__}: {exc}"
            step(c["name"], "FAILED: " + row["error"])
        rows[c["name"]] = row

    ok = {n: r for n, r in rows.items() if "error" not in r}
    thread_rows = [n for n, r in ok.items() if r["group"] == "threads"]
    best_threads = max(thread_rows, key=lambda n: ok[n]["files_s"]) if thread_rows else None
    arows = [n for n, r in ok.items() if r["group"] == "asyncload"]
    ref = max(arows, key=lambda n: ok[n]["files_s"]) if arows else None
    rec = recommend(rows, ref, procs, args.queue_depth, max_bytes, mount["fstype"], args.cold)
    print()
    print(fmt_table(rows, ref, best_threads))
    print(f"(x asyncload = files/s / {ref or 'no asyncload row'}; thread pools tried: "
          f"{', '.join(str(t) for t in threads)})")
    if ref:
        print(f"recommended: Loader(queue_depth={rec['queue_depth']}, "
              f"max_file_size={rec['max_file_size']}, n_workers={rec['n_workers']}) "
              f"[engine {rec['engine']}]: {rec['why']}; max_file_size covers the largest file")
    report = dict(command="asyncload bench " + " ".join(sys.argv[1:]), version=__version__,
                  dir=os.path.abspath(root), files=len(paths), bytes=total,
                  max_bytes=max_bytes, mode=mode, cache=cache_note,
                  cache_method=cache.method if args.cold else "fill",
                  mount=mount, io_uring=uring, engines=have, procs=procs,
                  queue_depth=args.queue_depth, threads=threads, best_threads=best_threads,
                  ref=ref, rows=rows, recommend=rec, loadavg=os.getloadavg()[0],
                  system=_sysinfo.collect())
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
        print(f"wrote {args.json}")
    if args.png:
        try:
            chart(rows, args.png, f"{len(paths)} files, {total / 1e6:,.0f} MB on "
                  f"{mount['fstype']}, {mode}; kernel {_sysinfo.platform.release()}")
            print(f"wrote {args.png}")
        except ImportError:
            print("no chart: matplotlib is not installed (pip install 'asyncload[cli]')",
                  file=sys.stderr)
    return 0 if ref else 1


def _cache_size(text: str) -> int:
    from .cli import _size
    return _size(text)


def add_parser(sub: Any) -> None:
    p = sub.add_parser("bench", help="measure every way to read DIR's files on this machine")
    p.add_argument("dir", metavar="DIR")
    p.add_argument("--files", type=int, default=2000, help="files to read (default 2000, "
                   "a random sample of DIR)")
    p.add_argument("--ext", help="only files with this extension")
    p.add_argument("--cold", action="store_true",
                   help="evict the files from the page cache before each contender")
    p.add_argument("--json", metavar="PATH", help="write the results as JSON")
    p.add_argument("--png", metavar="PATH", help="write a chart (needs matplotlib)")
    p.add_argument("--engine", default="all", choices=["all", "auto", "io_uring", "threads"],
                   help="asyncload engine(s) to run (default: every engine in this build)")
    p.add_argument("--procs", type=int, default=0,
                   help="reader/worker processes (default: CPUs, 2 to 4)")
    p.add_argument("--queue-depth", type=int, default=64, help="asyncload queue depth")
    p.add_argument("--threads", default="4,8,16", help="thread pool sizes to try")
    p.add_argument("--seed", type=int, default=0, help="shuffle seed")
    p.add_argument("--cache", type=_cache_size, default=0, metavar="BYTES",
                   help="add asyncload-cache: a loader with this cache_bytes (e.g. 1G), "
                        "filled by one untimed epoch before its timed one")
    p.set_defaults(run=run_bench)
