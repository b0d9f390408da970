#!/usr/bin/env python3
"""Make the ImageNet-shaped benchmark dataset: N files of random bytes in 100 class folders.

    python3 tools/make_dataset.py data/bench-20000 --n 20000 --seed 0

Sizes are log-normal with a mean near 110 KB (ImageNet's JPEG average), clipped to [2 KiB, 6 MiB],
so a run has mostly small files and a tail of large ones, as a real training set does. Everything
(sizes, contents, names) follows from the seed, so two machines build byte-identical trees.

A manifest (MANIFEST.json) is written last; when it already records the same parameters the
command does nothing, which lets bench.py call this on every run. The manifest also lists the
files, their sizes and the total bytes, so readers can check that they read every byte.
"""

import argparse
import json
import os
import sys
import time

import numpy as np

FORMAT = 1              # bump when the layout or the size law changes: old trees are rebuilt
N_CLASSES = 100
MEAN_BYTES = 110_000
SIGMA = 0.9             # 1st..99.9th percentile ~9 KB..1.2 MB; the largest of 20k files ~2.9 MB
MIN_BYTES = 2 << 10
MAX_BYTES = 6 << 20
MANIFEST = "MANIFEST.json"


def plan(n, seed):
    """The (relative path, size) of every file; the same for the same (n, seed)."""
    rng = np.random.default_rng([seed, FORMAT])
    # mean of a log-normal is exp(mu + sigma^2/2): pick mu so the mean lands on MEAN_BYTES
    mu = np.log(MEAN_BYTES) - SIGMA * SIGMA / 2
    sizes = np.clip(rng.lognormal(mu, SIGMA, n), MIN_BYTES, MAX_BYTES).astype(np.int64)
    files = []
    for i in range(n):
        cls = i % N_CLASSES
        files.append((f"c{cls:03d}/c{cls:03d}_{i:07d}.bin", int(sizes[i])))
    return files


def read_manifest(root):
    try:
        with open(os.path.join(root, MANIFEST)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def make(root, n, seed, quiet=False):
    """Build the tree under root unless a matching manifest says it is already there."""
    want = {"format": FORMAT, "n": n, "seed": seed}
    old = read_manifest(root)
    if old and all(old.get(k) == v for k, v in want.items()):
        return old
    files = plan(n, seed)
    os.makedirs(root, exist_ok=True)
    # a stale or half-made tree: drop the manifest first so a crash never leaves a lying one
    try:
        os.unlink(os.path.join(root, MANIFEST))
    except FileNotFoundError:
        pass
    for c in range(N_CLASSES):
        os.makedirs(os.path.join(root, f"c{c:03d}"), exist_ok=True)
    # one content stream for the whole tree: numpy's PCG64 makes bytes far faster than
    # random.randbytes, and drawing them per file keeps each file's bytes fixed by the seed
    rng = np.random.default_rng([seed, FORMAT, 1])
    total = sum(s for _, s in files)
    t0 = time.monotonic()
    done = 0
    for i, (rel, size) in enumerate(files):
        with open(os.path.join(root, rel), "wb") as f:
            f.write(rng.bytes(size))
        done += size
        if not quiet and (i + 1) % 2000 == 0:
            print(f"make_dataset: {i + 1}/{n} files, {done / 1e9:.2f}/{total / 1e9:.2f} GB",
                  file=sys.stderr, flush=True)
    os.sync()
    sizes = [s for _, s in files]
    manifest = dict(want, n_classes=N_CLASSES, total_bytes=total, min_bytes=min(sizes),
                    max_bytes=max(sizes), mean_bytes=total / n, files=files)
    tmp = os.path.join(root, MANIFEST + ".tmp")
    with open(tmp, "w") as f:
        json.dump(manifest, f)
    os.replace(tmp, os.path.join(root, MANIFEST))
    if not quiet:
        print(f"make_dataset: {n} files, {total / 1e9:.2f} GB in {time.monotonic() - t0:.1f} s "
              f"(mean {total / n / 1e3:.0f} KB, min {min(sizes) / 1e3:.1f} KB, "
              f"max {max(sizes) / 1e6:.2f} MB) -> {root}", file=sys.stderr, flush=True)
    return manifest


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dir", help="where to build the tree (created if missing)")
    ap.add_argument("--n", type=int, default=20000, help="number of files (default 20000)")
    ap.add_argument("--seed", type=int, default=0, help="seed for sizes and contents (default 0)")
    ap.add_argument("-q", "--quiet", action="store_true")
    args = ap.parse_args()
    if args.n < 1:
        ap.error("--n must be at least 1")
    make(args.dir, args.n, args.seed, args.quiet)


if __name__ == "__main__":
    main()
