"""Command line of asyncload (`asyncload ...` or `python -m asyncload ...`).

  load DIR   load every matching file under DIR through N worker processes,
             show progress on stderr, print files/s and MB/s; --verify
             compares each file with a plain read and fails on a mismatch.
  demo       build a small varied dataset in a temporary folder, run
             `load --verify` on it, clean up.
  bench DIR  every way to read DIR's files, measured on this machine (_bench.py)
  info       version, engine, kernel features and limits (_sysinfo.py)
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import queue
import random
import shutil
import sys
import tempfile
import time
from typing import Any, List, Optional, Sequence, Tuple

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
                 reports: "mp.Queue[Tuple]") -> None:
    """Body of one worker process: load its share, report, verify."""
    files = nbytes = 0
    errors: List[str] = []
    mismatches: List[str] = []
    last = time.monotonic()
    try:
        for entry in worker.load(paths):
            with entry:
                if entry.error:
                    errors.append(f"{entry.path}: {os.strerror(entry.error)}")
                else:
                    data = entry.data
                    nbytes += len(data)
                    if verify and read_plain(entry.path) != data:
                        mismatches.append(entry.path)
                    del data  # a live view would make release() refuse
            files += 1
            now = time.monotonic()
            if now - last >= _REPORT_EVERY_S:
                reports.put(("progress", files, nbytes))
                files = nbytes = 0
                last = now
    except BaseException as exc:  # report, don't just die silently
        errors.append(f"worker {worker.id} stopped: {exc!r}")
    reports.put(("progress", files, nbytes))
    reports.put(("done", worker.id, errors, mismatches))


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
             max_file_size: Optional[int] = None) -> int:
    """The `load` command; returns the process exit status."""
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
    errors: List[str] = []
    mismatches: List[str] = []
    files = nbytes = 0
    with Loader(queue_depth=queue_depth, max_file_size=max_file_size,
                n_workers=workers, direct=direct) as loader:
        start = time.monotonic()
        procs = [
            ctx.Process(target=_worker_main, name=f"asyncload-worker-{i}",
                        args=(loader.get_worker_context(i), paths[i::workers], verify,
                              reports))
            for i in range(workers)
        ]
        for p in procs:
            p.start()
        bar = _Progress(len(paths), total_bytes)
        done = 0
        while done < workers:
            try:
                msg = reports.get(timeout=0.2)
            except queue.Empty:
                if all(not p.is_alive() for p in procs) and reports.empty():
                    errors.append("a worker process died without reporting")
                    break
                bar.draw(files, nbytes)
                continue
            if msg[0] == "progress":
                files += msg[1]
                nbytes += msg[2]
                bar.draw(files, nbytes)
            else:
                done += 1
                errors.extend(msg[2])
                mismatches.extend(msg[3])
        for p in procs:
            p.join(10)
            if p.exitcode != 0:
                errors.append(f"{p.name} exited with status {p.exitcode}")
        elapsed = max(time.monotonic() - start, 1e-9)
        bar.draw(files, nbytes, final=True)

    print(f"loaded {files} files, {_fmt_bytes(nbytes)} in {elapsed:.2f} s: "
          f"{files / elapsed:.0f} files/s, {nbytes / elapsed / 1e6:.1f} MB/s "
          f"({workers} workers, queue depth {queue_depth}"
          f"{', O_DIRECT' if direct else ''})")
    for line in errors[:_MAX_ERRORS_SHOWN]:
        print(f"error: {line}", file=sys.stderr)
    if len(errors) > _MAX_ERRORS_SHOWN:
        print(f"... and {len(errors) - _MAX_ERRORS_SHOWN} more errors", file=sys.stderr)
    if verify:
        for p in mismatches[:_MAX_ERRORS_SHOWN]:
            print(f"MISMATCH: {p}", file=sys.stderr)
        status = "OK" if not mismatches and files == len(paths) else "FAILED"
        print(f"verify: {files - len(mismatches)}/{len(paths)} files identical: {status}")
    if errors or mismatches or files != len(paths):
        return 1
    return 0


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
                            args.max_file_size)
        return run_demo(args.workers, args.queue_depth, args.start_method)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
