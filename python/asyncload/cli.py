"""Command line of asyncload (`asyncload ...` or `python -m asyncload ...`).

  load DIR   load every matching file under DIR through N worker processes,
             show progress on stderr, print how many loaded and failed (by
             errno name), files/s and MB/s of the loading alone, and the
             workers' start-up apart; --verify compares each file with a
             plain read and fails on a mismatch or a failed load.
  demo       build a small varied dataset in a temporary folder, run
             `load --verify` on it, clean up.
  bench DIR  every way to read DIR's files, measured on this machine (_bench.py, _contenders.py)
  info       version, engine, kernel features and limits (_sysinfo.py)
"""

from __future__ import annotations

import argparse
import errno
import multiprocessing as mp
import os
import queue
import random
import shutil
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

from . import _bench, _sysinfo
from ._loader import Loader
from ._worker import Worker

# Worker processes report progress in batches no longer apart than this, to
# keep the queue traffic negligible next to the loads.
_REPORT_EVERY_S = 0.1
_MAX_ERRORS_SHOWN = 10


def find_files(root: str, ext: Optional[str]) -> List[str]:
    """Regular files under root (recursively, sorted) whose extension matches.

    ``ext`` is compared case-insensitively, with or without its dot.
    """
    suffix = None if not ext else "." + ext.lstrip(".").lower()
    found: List[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            if suffix is not None and not name.lower().endswith(suffix):
                continue
            path = os.path.join(dirpath, name)
            if os.path.isfile(path):
                found.append(path)
    return found


def read_plain(path: str) -> bytes:
    """The reference bytes for --verify: an ordinary buffered read."""
    with open(path, "rb") as f:
        return f.read()


def _worker_main(worker: Worker, paths: Sequence[str], verify: bool,
                 reports: "mp.Queue[Tuple]", go: Any) -> None:
    """Body of one worker process: attach, wait for the start signal, load
    its share, report.

    Start-up (process start, import, attaching to the region) happens before
    the "ready" report, so that the timed part is the loading alone.
    """
    loaded = nbytes = matched = 0
    done_files = done_bytes = 0
    failed: Dict[int, int] = {}
    errors: List[str] = []
    mismatches: List[str] = []
    t_first = t_last = 0.0
    try:
        worker.claim()
    except BaseException as exc:
        errors.append(f"worker {worker.id} could not attach: {exc!r}")
        reports.put(("ready", worker.id))
        reports.put(("done", worker.id, 0, 0, 0, failed, errors, mismatches, 0.0, 0.0))
        return
    reports.put(("ready", worker.id))
    parent = os.getppid()
    while not go.wait(0.5):
        if os.getppid() != parent:  # the command went away before starting us
            return
    last = t_first = time.monotonic()
    try:
        for entry in worker.load(paths):
            with entry:
                if entry.error:
                    failed[entry.error] = failed.get(entry.error, 0) + 1
                    if len(errors) < _MAX_ERRORS_SHOWN:
                        errors.append(f"{entry.path}: {_errno_name(entry.error)} "
                                      f"({os.strerror(entry.error)})")
                else:
                    data = entry.data
                    loaded += 1
                    nbytes += len(data)
                    done_bytes += len(data)
                    if verify:
                        if read_plain(entry.path) == data:
                            matched += 1
                        else:
                            mismatches.append(entry.path)
                    del data  # a live view would make release() refuse
            done_files += 1
            now = time.monotonic()
            if now - last >= _REPORT_EVERY_S:
                reports.put(("progress", done_files, done_bytes))
                done_files = done_bytes = 0
                last = now
    except BaseException as exc:  # report, don't just die silently
        errors.append(f"worker {worker.id} stopped: {exc!r}")
    t_last = time.monotonic()
    reports.put(("progress", done_files, done_bytes))
    reports.put(("done", worker.id, loaded, nbytes, matched, failed, errors, mismatches,
                 t_first, t_last))


def _errno_name(err: int) -> str:
    return errno.errorcode.get(err, f"errno {err}")


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000:
            return f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


class _Progress:
    """A plain-text progress bar on stderr (redrawn in place on a tty)."""

    def __init__(self, total: int, total_bytes: int) -> None:
        self.total = max(total, 1)
        self.total_bytes = total_bytes
        self.tty = sys.stderr.isatty()
        self.start = time.monotonic()
        self.last_draw = 0.0

    def draw(self, files: int, nbytes: int, final: bool = False) -> None:
        now = time.monotonic()
        # Off a tty every redraw is a new line, so draw rarely there.
        if not final and now - self.last_draw < (0.1 if self.tty else 2.0):
            return
        self.last_draw = now
        width = 30
        filled = int(width * files / self.total)
        el = max(now - self.start, 1e-9)
        line = (f"[{'#' * filled}{'.' * (width - filled)}] {files}/{self.total} files "
                f"{_fmt_bytes(nbytes)}/{_fmt_bytes(self.total_bytes)} "
                f"{files / el:.0f} files/s {nbytes / el / 1e6:.1f} MB/s")
        if self.tty:
            sys.stderr.write("\r" + line + ("\n" if final else ""))
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()


def run_load(directory: str, ext: Optional[str], workers: int, queue_depth: int,
             direct: bool, verify: bool, start_method: str,
             max_file_size: Optional[int] = None, cache_bytes: int = 0) -> int:
    """The `load` command; returns the process exit status.

    Prints what was loaded, what failed (by errno name) and, with --verify,
    what matched a plain read; the files/s figure times the loading only
    (first request to last completion), and the worker processes' start-up
    is reported on its own line.
    """
    if not os.path.isdir(directory):
        print(f"asyncload: {directory}: not a directory", file=sys.stderr)
        return 2
    paths = find_files(directory, ext)
    if not paths:
        print(f"asyncload: no files{' with extension ' + ext if ext else ''} "
              f"under {directory}", file=sys.stderr)
        return 1
    sizes = [os.path.getsize(p) for p in paths]
    total_bytes = sum(sizes)
    if max_file_size is None:
        # Round up to whole pages: O_DIRECT needs aligned buffers anyway.
        max_file_size = max(4096, (max(sizes) + 4095) // 4096 * 4096)
    workers = max(1, min(workers, len(paths)))
    ctx: Any = mp.get_context(start_method)  # typeshed lacks Process on BaseContext
    reports: "mp.Queue[Tuple]" = ctx.Queue()
    go = ctx.Event()
    problems: List[str] = []      # not per-file: a worker that died or failed to attach
    errors: List[str] = []
    mismatches: List[str] = []
    failed: Dict[int, int] = {}
    loaded = nbytes = matched = 0
    t_first: List[float] = []
    t_last: List[float] = []
    with Loader(queue_depth=queue_depth, max_file_size=max_file_size,
                n_workers=workers, direct=direct, cache_bytes=cache_bytes) as loader:
        procs = [
            ctx.Process(target=_worker_main, name=f"asyncload-worker-{i}",
                        args=(loader.get_worker_context(i), paths[i::workers], verify,
                              reports, go))
            for i in range(workers)
        ]
        t_start = time.monotonic()
        for p in procs:
            p.start()
        pending: List[Tuple] = []  # reports that overtook the last "ready"
        ready = 0
        while ready < workers:
            try:
                msg = reports.get(timeout=0.2)
            except queue.Empty:
                if all(not p.is_alive() for p in procs) and reports.empty():
                    break
                continue
            if msg[0] == "ready":
                ready += 1
            else:
                pending.append(msg)
        startup = time.monotonic() - t_start
        go.set()
        bar = _Progress(len(paths), total_bytes)
        files = done_bytes = 0
        done = 0
        while done < workers:
            if pending:
                msg = pending.pop(0)
            else:
                try:
                    msg = reports.get(timeout=0.2)
                except queue.Empty:
                    if all(not p.is_alive() for p in procs) and reports.empty():
                        problems.append("a worker process died without reporting")
                        break
                    bar.draw(files, done_bytes)
                    continue
            if msg[0] == "progress":
                files += msg[1]
                done_bytes += msg[2]
                bar.draw(files, done_bytes)
            elif msg[0] == "done":
                done += 1
                _, _, w_loaded, w_bytes, w_matched, w_failed, w_errors, w_mism, t0, t1 = msg
                loaded += w_loaded
                nbytes += w_bytes
                matched += w_matched
                for err, n in w_failed.items():
                    failed[err] = failed.get(err, 0) + n
                errors.extend(w_errors)
                mismatches.extend(w_mism)
                if t1 > 0:
                    t_first.append(t0)
                    t_last.append(t1)
        bar.draw(files, done_bytes, final=True)
        for p in procs:
            p.join(10)
            if p.exitcode != 0:
                problems.append(f"{p.name} exited with status {p.exitcode}")

    n_failed = sum(failed.values())
    elapsed = max(max(t_last) - min(t_first), 1e-9) if t_first else 0.0
    settings = (f"{workers} workers, queue depth {queue_depth}"
                f"{', O_DIRECT' if direct else ''}")
    print(f"start-up: {workers} worker process{'es' if workers > 1 else ''} "
          f"({start_method}) started and attached in {startup:.2f} s, not timed below")
    rate = (f"{loaded / elapsed:.0f} files/s, {nbytes / elapsed / 1e6:.1f} MB/s"
            if elapsed > 0 else "no rate")
    print(f"loaded: {loaded} of {len(paths)} files, {_fmt_bytes(nbytes)} in "
          f"{elapsed:.3f} s: {rate} ({settings})")
    print("timed: first request to last completion over all workers"
          + (", including --verify's plain reads" if verify else ""))
    if n_failed:
        by_errno = ", ".join(f"{_errno_name(e)} {n}" for e, n in
                             sorted(failed.items(), key=lambda kv: -kv[1]))
        print(f"failed: {n_failed} of {len(paths)} files ({by_errno})")
    else:
        print(f"failed: 0 of {len(paths)} files")
    for line in errors[:_MAX_ERRORS_SHOWN]:
        print(f"error: {line}", file=sys.stderr)
    if n_failed > len(errors[:_MAX_ERRORS_SHOWN]):
        print(f"... and {n_failed - len(errors[:_MAX_ERRORS_SHOWN])} more failed loads",
              file=sys.stderr)
    for line in problems:
        print(f"error: {line}", file=sys.stderr)
    unaccounted = len(paths) - loaded - n_failed
    ok = not problems and n_failed == 0 and unaccounted == 0
    if verify:
        for p in mismatches[:_MAX_ERRORS_SHOWN]:
            print(f"MISMATCH: {p}", file=sys.stderr)
        ok = ok and matched == len(paths)
        print(f"verify: {matched} of {len(paths)} files identical to a plain read "
              f"({len(mismatches)} differ, {n_failed} failed to load"
              f"{f', {unaccounted} never completed' if unaccounted else ''}): "
              f"{'OK' if ok else 'FAILED'}")
    return 0 if ok else 1


def make_demo_dataset(root: str, n_files: int = 2000, seed: int = 0) -> int:
    """Write n_files of varied sizes (0 B .. 256 kB, mostly small) under root.

    Returns the total size. A few files of other types are added so that the
    --ext filter is exercised too.
    """
    rng = random.Random(seed)
    total = 0
    for i in range(n_files):
        sub = os.path.join(root, f"class{i % 20:02d}")
        os.makedirs(sub, exist_ok=True)
        # Log-uniform sizes: many small files, a few large ones, plus the
        # edge cases (empty, one byte, exactly one page).
        if i < 3:
            size = (0, 1, 4096)[i]
        else:
            size = int(2 ** rng.uniform(6, 18))
        data = rng.randbytes(size) if hasattr(rng, "randbytes") else os.urandom(size)
        with open(os.path.join(sub, f"img{i:05d}.JPEG"), "wb") as f:
            f.write(data)
        total += size
    for i in range(5):
        with open(os.path.join(root, f"class{i:02d}", f"notes{i}.txt"), "w") as f:
            f.write("not part of the dataset\n")
    return total


def run_demo(workers: int, queue_depth: int, start_method: str) -> int:
    tmp = tempfile.mkdtemp(prefix="asyncload-demo-")
    try:
        total = make_demo_dataset(tmp)
        print(f"demo: 2000 files, {_fmt_bytes(total)} in {tmp}")
        return run_load(tmp, "JPEG", workers, queue_depth, direct=False, verify=True,
                        start_method=start_method)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _positive(text: str) -> int:
    v = int(text)
    if v < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return v


def _size(text: str) -> int:
    """Bytes, with an optional K, M, G or T suffix (powers of 1024)."""
    units = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    t = text.strip().upper()
    for suffix in ("B", "I"):  # 4GiB, 4GB, 4G, 8B
        if t.endswith(suffix):
            t = t[:-1]
    unit = t[-1:] if t[-1:] in units else ""
    try:
        v = int(float(t[:len(t) - len(unit)]) * units[unit])
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError("must not be negative")
    return v


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="asyncload", description="io_uring file loader for ML pipelines")
    sub = parser.add_subparsers(dest="command", required=True)
    methods = mp.get_all_start_methods()

    load = sub.add_parser("load", help="load every matching file under DIR")
    load.add_argument("dir", metavar="DIR")
    load.add_argument("--ext", help="only files with this extension (e.g. JPEG)")
    load.add_argument("--workers", type=_positive, default=2, help="worker processes")
    load.add_argument("--queue-depth", type=_positive, default=32,
                      help="loads in flight per worker")
    load.add_argument("--max-file-size", type=_positive, default=None,
                      help="bytes per entry (default: the largest file)")
    load.add_argument("--direct", action="store_true", help="O_DIRECT: bypass page cache")
    load.add_argument("--verify", action="store_true",
                      help="compare every byte with a plain read")
    load.add_argument("--start-method", choices=methods, default="spawn",
                      help="how worker processes start (default: spawn)")
    load.add_argument("--cache", type=_size, default=0, metavar="BYTES",
                      help="keep up to BYTES of what is read in shared memory (e.g. 4G; "
                           "default 0: no cache)")

    demo = sub.add_parser("demo", help="load --verify a generated 2000-file dataset")
    demo.add_argument("--workers", type=_positive, default=2)
    demo.add_argument("--queue-depth", type=_positive, default=32)
    demo.add_argument("--start-method", choices=methods, default="spawn")
    _bench.add_parser(sub)
    _sysinfo.add_parser(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if hasattr(args, "run"):     # subcommands that live in their own module
            return int(args.run(args))
        if args.command == "load":
            return run_load(args.dir, args.ext, args.workers, args.queue_depth,
                            args.direct, args.verify, args.start_method,
                            args.max_file_size, args.cache)
        return run_demo(args.workers, args.queue_depth, args.start_method)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
