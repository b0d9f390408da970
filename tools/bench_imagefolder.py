#!/usr/bin/env python3
"""Epoch times of torchvision's ImageFolder against asyncload.torch.ImageFolder, cold and warm.

    python3 tools/bench_imagefolder.py                     # 600 JPEGs, 2 repeats
    python3 tools/bench_imagefolder.py --n 3000 --repeats 3 --json bench-out/imagefolder.json

The figures of docs/imagefolder.md: the same training-script data part run
with either ImageFolder (only the class differs): a PIL transform pipeline
(resize to 224x224, random horizontal flip, to a uint8 CHW tensor),
DataLoader with shuffle, batch 64, persistent workers. The JPEGs and the
page-cache evictor are tools/bench_torch.py's. The reference is
torchvision's ImageFolder where torchvision imports, else the plain PIL
stand-in of tests/python/tv_standin.py (torchvision's CPU build is not on
PyPI); the output names which. Epochs of the two alternate, after an untimed
warm-up epoch each, so a shared machine's load drift hits both alike.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from typing import Any, Dict, List, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import torch  # noqa: E402
from PIL import Image  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from asyncload.torch import ImageFolder  # noqa: E402
from bench_torch import CacheDropper, loadavg, make_jpegs  # noqa: E402


def reference_imagefolder() -> Any:
    try:
        from torchvision.datasets import ImageFolder as TV  # type: ignore[import-not-found]
        return TV, "torchvision.datasets.ImageFolder"
    except Exception:  # absent, or the CUDA build next to a CPU torch
        sys.path.insert(0, os.path.join(REPO, "tests", "python"))
        from tv_standin import ImageFolder as Standin
        return Standin, "plain PIL Dataset (tests/python/tv_standin.py)"


class TrainTransform:
    """What a torchvision pipeline does for training, in PIL + torch only."""

    def __call__(self, img: Image.Image) -> torch.Tensor:
        img = img.resize((224, 224), Image.BILINEAR)
        if torch.rand(1) < 0.5:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
        t = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8)
        return t.view(224, 224, 3).permute(2, 0, 1)


def cpu_seconds() -> float:
    """CPU time (user + system) of this process and its live children: the
    DataLoader workers and asyncload's loader process. On a shared machine
    this moves less with other tenants' load than the wall time does."""
    tick = os.sysconf("SC_CLK_TCK")
    me = os.getpid()
    total = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(pid) == me or int(fields[1]) == me:  # fields[1]: ppid
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / tick


def run_epoch(dl: Any) -> Tuple[float, float, int]:
    """(wall seconds, CPU seconds, images delivered)."""
    c0 = cpu_seconds()
    t0 = time.perf_counter()
    n = 0
    for _images, labels in dl:
        n += len(labels)
    return time.perf_counter() - t0, cpu_seconds() - c0, n


def main(argv: List[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=600, help="JPEG files (default 600)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data", help="dataset folder (default data/bench-torch-<n>-s<seed>)")
    ap.add_argument("--repeats", type=int, default=2, help="timed epochs per cell")
    ap.add_argument("--workers", type=int, default=2, help="DataLoader num_workers")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--cold", choices=["drop_caches", "fadvise"], default="fadvise",
                    help="how to empty the cache (default: fadvise, per file)")
    ap.add_argument("--json", help="write the results as JSON here")
    args = ap.parse_args(argv)

    data = args.data or os.path.join(REPO, "data", f"bench-torch-{args.n}-s{args.seed}")
    paths = make_jpegs(data, args.n, args.seed, jobs=os.cpu_count() or 1)
    ref_cls, ref_name = reference_imagefolder()
    dropper = CacheDropper(paths, args.cold)
    load_start = loadavg()
    datasets = {"torchvision": ref_cls(data, transform=TrainTransform()),
                "asyncload": ImageFolder(data, transform=TrainTransform())}
    assert datasets["torchvision"].samples == datasets["asyncload"].samples
    loaders = {k: DataLoader(ds, batch_size=args.batch_size, shuffle=True,
                             num_workers=args.workers, persistent_workers=args.workers > 0)
               for k, ds in datasets.items()}
    cells: Dict[str, List[float]] = {}
    cpus: Dict[str, List[float]] = {}
    try:
        for kind, dl in loaders.items():
            secs, cpu, n = run_epoch(dl)
            print(f"{kind:11s} warm-up  {secs:6.2f} s", file=sys.stderr)
        for r in range(args.repeats):
            for cache in ("cold", "warm"):
                for kind, dl in loaders.items():
                    if cache == "cold":
                        dropper.drop()
                    secs, cpu, n = run_epoch(dl)
                    if n != len(paths):
                        raise SystemExit(f"{kind}: {n} images in an epoch, not {len(paths)}")
                    cells.setdefault(f"{kind}/{cache}", []).append(round(secs, 3))
                    cpus.setdefault(f"{kind}/{cache}", []).append(round(cpu, 2))
                    print(f"{kind:11s} {cache} #{r + 1}  {secs:6.2f} s  CPU {cpu:6.2f} s",
                          file=sys.stderr)
    finally:
        del loaders
        datasets["asyncload"].close()
    med = {k: statistics.median(v) for k, v in cells.items()}
    med_cpu = {k: statistics.median(v) for k, v in cpus.items()}
    result = {
        "command": "python3 " + " ".join([os.path.relpath(__file__, REPO)] + argv),
        "reference": ref_name, "files": len(paths), "num_workers": args.workers,
        "batch_size": args.batch_size, "cold": dropper.method,
        "loadavg_start": load_start, "loadavg_end": loadavg(), "cpus": os.cpu_count(),
        "epochs": cells, "median_seconds": {k: round(v, 3) for k, v in med.items()},
        "cpu_seconds": cpus, "median_cpu_seconds": {k: round(v, 2) for k, v in med_cpu.items()},
    }
    print(f"\nreference: {ref_name}; {len(paths)} JPEGs, {args.workers} workers, "
          f"batch {args.batch_size}, cold = {dropper.method}; load {load_start:.1f} -> "
          f"{result['loadavg_end']:.1f} on {os.cpu_count()} CPUs")
    print(f"{'median of ' + str(args.repeats):18s}{'torchvision':>12s}{'asyncload':>12s}"
          f"{'tv / al':>9s}")
    for cache in ("cold", "warm"):
        for what, d in (("epoch", med), ("CPU", med_cpu)):
            a, b = d[f"torchvision/{cache}"], d[f"asyncload/{cache}"]
            print(f"{cache + ' ' + what + ' (s)':18s}{a:12.2f}{b:12.2f}{a / b:8.2f}x")
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
