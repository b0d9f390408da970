"""The contenders of `asyncload bench` and tools/bench.py, and how they are measured.

Each runner reads a shuffled file list one way (a plain sequential loop, a thread pool, reader
processes DataLoader-style, asyncload through a Loader and its Workers) and returns bytes,
files, errors, wall and CPU time; the /proc readers here measure CPU and memory, and PageCache
evicts or fills the page cache between runs. tools/bench.py imports them, so the benchmark in
the repository and the one users run measure the same way.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import resource
import time
from typing import Any, Callable, Dict, Optional, Sequence, Tuple


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


def machine_busy() -> float:
    """CPU seconds the whole machine has been busy (every process, daemons such as a FUSE
    server, and the kernel) since boot, from /proc/stat; differences over a timed window
    give a contender's full CPU cost, without its process start."""
    with open("/proc/stat") as f:
        t = [int(x) for x in f.readline().split()[1:]]
    idle = t[3] + t[4]  # idle + iowait
    return (sum(t[:8]) - idle) / os.sysconf("SC_CLK_TCK")


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
    m0, c0, t0 = machine_busy(), cpu_self(), time.perf_counter()
    nbytes, errors = _read_plain(paths)
    wall, cpu = time.perf_counter() - t0, cpu_self() - c0
    return dict(bytes=nbytes, files=len(paths), errors=errors, wall=wall, cpu=cpu,
                machine_cpu=machine_busy() - m0, end_pss_kb=pss_kb(os.getpid()))


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
        m0, c0, t0 = machine_busy(), cpu_self(), time.perf_counter()
        nbytes = errors = 0
        for data in ex.map(_read_or_none, paths):
            if data is None:
                errors += 1
            else:
                nbytes += len(data)
        wall, cpu = time.perf_counter() - t0, cpu_self() - c0
        machine_cpu = machine_busy() - m0
    return dict(bytes=nbytes, files=len(paths), errors=errors, wall=wall, cpu=cpu,
                machine_cpu=machine_cpu, end_pss_kb=pss_kb(os.getpid()))


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
        m0, c0, t0 = machine_busy(), cpu_self(), time.perf_counter()
        start.set()
        results = [c.recv() for c in conns]
        wall = time.perf_counter() - t0
        machine_cpu = machine_busy() - m0
        cpu = cpu_self() - c0 + sum(r["cpu"] for r in results)
        out = dict(bytes=sum(r["bytes"] for r in results),
                   files=sum(r["files"] for r in results),
                   errors=sum(r["errors"] for r in results), wall=wall,
                   machine_cpu=machine_cpu, end_pss_kb=pss_kb(os.getpid()) + sum(r["pss_kb"] for r in results))
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


def run_contender(paths: Sequence[str], spec: Dict[str, Any]) -> Dict[str, Any]:
    if spec["kind"] == "seq":
        return run_seq(paths, spec)
    if spec["kind"] == "threads":
        return run_threads(paths, spec)
    return run_parallel(paths, spec)
