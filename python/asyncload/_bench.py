"""`asyncload bench DIR`: every way to get DIR's files into Python, measured on this machine.

One run reads the same shuffled list of the user's own files with: a plain sequential loop,
a thread pool (a few sizes; the best is reported), reader processes (DataLoader-style), and
asyncload on each engine this build has. It prints a table (files/s, MB/s, CPU per file,
ratio to asyncload), the filesystem and mount of DIR, the kernel and whether io_uring is
available, and the settings it recommends; optionally writes JSON and a PNG chart.

The contender runners and the page-cache evictor live here, and tools/bench.py imports them,
so the benchmark in the repository and the one users run measure the same way.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import random
import resource
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

MiB = 1 << 20


# ------------------------------------------------------------------ measuring

def cpu_self() -> float:
    """User + system CPU seconds of this process (all its threads)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def proc_cpu(pid: int) -> float:
    """utime + stime of a whole process (dead threads included) from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # fields[0] is state (field 3); utime and stime are fields 14 and 15
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def status_kb(pid: int, key: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def write_pids(path: Optional[str], pids: Sequence[int]) -> None:
    """Name a contender's processes for tools/bench.py's memory sampler (when it asks)."""
    if not path:
        return
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(" ".join(str(p) for p in pids))
    os.replace(tmp, path)


def read_file(p: str) -> bytes:
    with open(p, "rb") as f:
        return f.read()


# ------------------------------------------------------------------ page cache

class PageCache:
    """Evicts a file list from the page cache, or fills it.

    drop() always evicts just the data of these files with posix_fadvise(DONTNEED) (after a
    sync, since dirty pages would stay); as root it also writes 2 to
    /proc/sys/vm/drop_caches so their dentries and inodes go too (a cold open then pays the
    metadata lookups as well). Unlike `echo 3`, nothing else on the machine (the code of
    Python and of the running contenders) is thrown out. ``method`` says which was used.
    method="fadvise" skips drop_caches even as root.
    """

    def __init__(self, paths: Sequence[str], method: str = "auto") -> None:
        if method not in ("auto", "fadvise", "drop_caches"):
            raise ValueError(f"unknown cache method {method!r}")
        self.paths = list(paths)
        self.method = "fadvise"
        if method != "fadvise" and os.access("/proc/sys/vm/drop_caches", os.W_OK):
            self.method = "fadvise+drop_caches"

    def describe(self) -> str:
        if self.method == "fadvise":
            return ("posix_fadvise(DONTNEED) per file (not root: dentries and inodes stay "
                    "cached; run as root to drop them too)")
        return "posix_fadvise(DONTNEED) per file, then drop_caches=2 (dentries, inodes) as root"

    def drop(self) -> None:
        os.sync()
        for p in self.paths:
            try:
                fd = os.open(p, os.O_RDONLY)
            except OSError:
                continue
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)
        if self.method == "fadvise+drop_caches":
            with open("/proc/sys/vm/drop_caches", "w") as f:
                f.write("2")

    def fill(self) -> None:
        for p in self.paths:
            try:
                read_file(p)
            except OSError:
                pass


# ------------------------------------------------------------------ contenders
# Each takes the shuffled list and a spec dict and returns bytes, files, errors, wall, cpu.
# Only the reading is timed: pools, processes and the loader start before the clock, as they
# do once per training job.

def _read_plain(paths: Sequence[str]) -> Tuple[int, int]:
    """(bytes, errors) of reading each path with open().read(), one after another."""
    nbytes = errors = 0
    for p in paths:
        try:
            with open(p, "rb") as f:
                nbytes += len(f.read())
        except OSError:
            errors += 1
    return nbytes, errors


def run_seq(paths: Sequence[str], spec: Dict[str, Any]) -> Dict[str, Any]:
    write_pids(spec.get("pids_path"), [os.getpid()])
    c0, t0 = cpu_self(), time.perf_counter()
    nbytes, errors = _read_plain(paths)
    wall, cpu = time.perf_counter() - t0, cpu_self() - c0
    return dict(bytes=nbytes, files=len(paths), errors=errors, wall=wall, cpu=cpu,
                end_pss_kb=pss_kb(os.getpid()))


def _read_or_none(p: str) -> Optional[bytes]:
    try:
        return read_file(p)
    except OSError:
        return None


def run_threads(paths: Sequence[str], spec: Dict[str, Any]) -> Dict[str, Any]:
    from concurrent.futures import ThreadPoolExecutor
    write_pids(spec.get("pids_path"), [os.getpid()])
    with ThreadPoolExecutor(spec["threads"]) as ex:
        # start the threads before the clock: a training job keeps its pool
        list(ex.map(abs, range(spec["threads"] * 4)))
        c0, t0 = cpu_self(), time.perf_counter()
        nbytes = errors = 0
        for data in ex.map(_read_or_none, paths):
            if data is None:
                errors += 1
            else:
                nbytes += len(data)
        wall, cpu = time.perf_counter() - t0, cpu_self() - c0
    return dict(bytes=nbytes, files=len(paths), errors=errors, wall=wall, cpu=cpu,
                end_pss_kb=pss_kb(os.getpid()))


def _proc_reader(share: Sequence[str], conn: Any, start: Any) -> None:
    conn.send("ready")
    start.wait()
    c0 = cpu_self()
    nbytes, errors = _read_plain(share)
    conn.send(dict(bytes=nbytes, files=len(share), errors=errors, cpu=cpu_self() - c0,
                   pss_kb=pss_kb(os.getpid())))


def _asyncload_worker(w: Any, share: Sequence[str], qd: int, conn: Any, start: Any) -> None:
    from ._lowlevel import LoadError
    w.try_get()     # attach to the loader before the clock starts
    conn.send("ready")
    start.wait()
    c0 = cpu_self()
    n, nbytes, errors = len(share), 0, 0
    for e in w.load(share):     # keeps the queue full, refilling it in bursts
        try:
            nbytes += len(e.data)
        except LoadError:
            errors += 1
        e.release()
    conn.send(dict(bytes=nbytes, files=n, errors=errors, cpu=cpu_self() - c0,
                   pss_kb=pss_kb(os.getpid())))


def make_loader(spec: Dict[str, Any]) -> Any:
    """The Loader a spec asks for; engine= is passed only when the spec names one, and a
    build without the engine option says so with EngineUnsupported."""
    from ._loader import Loader
    kw: Dict[str, Any] = dict(dispatch_n=spec.get("dispatch_n", 1),
                              idle_iters=spec.get("idle_iters", 0),
                              direct=spec.get("direct", False))
    if spec.get("engine"):
        kw["engine"] = spec["engine"]
    if spec.get("cache_bytes"):
        kw["cache_bytes"] = spec["cache_bytes"]
    # a cached contender fills its cache from one more slot before the clock
    slots = spec["procs"] + (1 if spec.get("cache_bytes") else 0)
    try:
        return Loader(spec["qd"], spec["max_file_size"], slots, **kw)
    except TypeError as exc:
        if "engine" in kw and "engine" in str(exc):
            raise EngineUnsupported("this build has no engine= option") from None
        raise


class EngineUnsupported(RuntimeError):
    """The requested engine does not exist in this build."""


def run_parallel(paths: Sequence[str], spec: Dict[str, Any]) -> Dict[str, Any]:
    """spec["procs"] processes (fork, as a DataLoader on Linux), started and ready before the
    clock; shares are interleaved so each gets the same mix of sizes. kind "procs" reads with
    open/read, kind "asyncload" through a Loader and Worker.load()."""
    ctx = mp.get_context("fork")
    n = spec["procs"]
    start = ctx.Event()
    loader = None
    loader_pid = 0
    if spec["kind"] == "asyncload":
        loader = make_loader(spec)
        loader_pid = loader.spawn_loader()
        if spec.get("cache_bytes"):
            # the epoch before: what fits is kept, so the timed one hits it
            filler = loader.get_worker_context(n)
            for e in filler.load(paths):
                e.release()
            filler.close()
    procs, conns = [], []
    try:
        for i in range(n):
            parent_end, child_end = ctx.Pipe()
            if loader is not None:
                target: Callable[..., None] = _asyncload_worker
                args: tuple = (loader.get_worker_context(i), paths[i::n], spec["qd"],
                               child_end, start)
            else:
                target, args = _proc_reader, (paths[i::n], child_end, start)
            p = ctx.Process(target=target, args=args, daemon=True)
            p.start()
            procs.append(p)
            conns.append(parent_end)
        for c in conns:
            if c.recv() != "ready":
                raise RuntimeError("a worker did not start")
        write_pids(spec.get("pids_path"),
                   [os.getpid()] + [p.pid for p in procs] + ([loader_pid] if loader_pid else []))
        lc0 = proc_cpu(loader_pid) if loader_pid else 0.0
        c0, t0 = cpu_self(), time.perf_counter()
        start.set()
        results = [c.recv() for c in conns]
        wall = time.perf_counter() - t0
        cpu = cpu_self() - c0 + sum(r["cpu"] for r in results)
        out = dict(bytes=sum(r["bytes"] for r in results),
                   files=sum(r["files"] for r in results),
                   errors=sum(r["errors"] for r in results), wall=wall,
                   end_pss_kb=pss_kb(os.getpid()) + sum(r["pss_kb"] for r in results))
        if loader_pid:
            lcpu = proc_cpu(loader_pid) - lc0
            out.update(loader_cpu=lcpu, loader_shmem_kb=status_kb(loader_pid, "RssShmem"),
                       loader_hwm_kb=status_kb(loader_pid, "VmHWM"))
            out["end_pss_kb"] += pss_kb(loader_pid)
            cpu += lcpu
            engine = getattr(loader, "engine", None)
            if engine:
                out["engine"] = engine
            if spec.get("cache_bytes"):
                st = loader.stats()
                out["cache"] = {k: st[k] for k in ("hits", "misses", "bytes_from_cache",
                                                   "cache_bytes_used")}
        out["cpu"] = cpu
        return out
    finally:
        for p in procs:
            p.join(10)
            if p.is_alive():
                p.kill()
                p.join()
        if loader is not None:
            loader.shutdown()
            loader.close()


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


def run_contender(paths: Sequence[str], spec: Dict[str, Any]) -> Dict[str, Any]:
    if spec["kind"] == "seq":
        return run_seq(paths, spec)
    if spec["kind"] == "threads":
        return run_threads(paths, spec)
    return run_parallel(paths, spec)


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
    have = [e for e in _sysinfo.engines() if e != "io_uring" or uring["available"]]
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
