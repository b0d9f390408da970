#!/usr/bin/env python3
"""A tiny CPU training loop whose JPEGs are read by asyncload: the newcomer's example.

    python3 examples/train_tiny.py                  # makes a small synthetic JPEG dataset first
    python3 examples/train_tiny.py --data DIR       # any torchvision-style folder: DIR/<class>/*.jpg
    python3 examples/train_tiny.py --start-method spawn --workers 2 --epochs 3

Needs torch (the CPU build is enough) and Pillow. The only asyncload-specific
line is the ImageFolder import: the script is written as for torchvision's
ImageFolder (PIL images into the transform), and the rest is ordinary
PyTorch. The whole run takes a few seconds.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from typing import List, Tuple

import torch
from torch import nn
from torch.utils.data import DataLoader

from asyncload.torch import ImageFolder  # was: from torchvision.datasets import ImageFolder

SIDE = 32            # the model's input is SIDE x SIDE RGB
N_CLASSES = 4
PER_CLASS = 96
# One base colour per class: what the model has to learn to tell apart.
PALETTE: List[Tuple[int, int, int]] = [(200, 40, 40), (40, 170, 60), (50, 70, 210), (210, 190, 40)]


def make_dataset(root: str, seed: int = 0) -> None:
    """Write PER_CLASS noisy JPEGs per class under root/<class>/ (skipped if done)."""
    from PIL import Image, ImageDraw

    done = os.path.join(root, ".complete")
    if os.path.exists(done):
        return
    rng = random.Random(seed)
    for c in range(N_CLASSES):
        cls_dir = os.path.join(root, f"class{c}")
        os.makedirs(cls_dir, exist_ok=True)
        for i in range(PER_CLASS):
            w, h = rng.randrange(48, 97), rng.randrange(48, 97)
            base = tuple(max(0, min(255, v + rng.randrange(-40, 41))) for v in PALETTE[c])
            im = Image.new("RGB", (w, h), base)
            draw = ImageDraw.Draw(im)
            for _ in range(6):  # clutter in random colours, so it is not trivial
                x, y = rng.randrange(w), rng.randrange(h)
                fill = tuple(rng.randrange(256) for _ in range(3))
                draw.ellipse([x, y, x + rng.randrange(4, 16), y + rng.randrange(4, 16)], fill=fill)
            im.save(os.path.join(cls_dir, f"img{i:04d}.jpg"), quality=85)
    with open(done, "w"):
        pass


def to_tensor(im: "PIL.Image.Image") -> torch.Tensor:  # noqa: F821
    """RGB image -> float CHW tensor in [0, 1]; module level so spawn workers can pickle it."""
    im = im.resize((SIDE, SIDE))
    pixels = torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8)
    return pixels.view(SIDE, SIDE, 3).permute(2, 0, 1).float().div_(255)


def tiny_model(n_classes: int) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(32, n_classes),
    )


def main(argv: List[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", help="image folder (default: a synthetic one in the temp dir)")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--workers", type=int, default=2, help="DataLoader num_workers")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--start-method", choices=["fork", "spawn", "forkserver"], default=None)
    args = ap.parse_args(argv)

    root = args.data
    if root is None:
        root = os.path.join(tempfile.gettempdir(), "asyncload-train-tiny")
        make_dataset(root)
    torch.manual_seed(0)
    # The model is tiny: extra intra-op threads only fight the DataLoader
    # workers (decoding JPEGs) for the same cores.
    torch.set_num_threads(1)

    ds = ImageFolder(root, transform=to_tensor)
    print(f"{len(ds)} images, classes {ds.classes}, from {root}")
    loader = DataLoader(ds, batch_size=args.batch_size, shuffle=True,
                        num_workers=args.workers,
                        persistent_workers=args.workers > 0,
                        multiprocessing_context=args.start_method if args.workers else None)
    model = tiny_model(len(ds.classes))
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    loss_fn = nn.CrossEntropyLoss()
    for epoch in range(args.epochs):
        t0 = time.perf_counter()
        seen = correct = 0
        total_loss = 0.0
        for x, y in loader:
            opt.zero_grad()
            out = model(x)
            loss = loss_fn(out, y)
            loss.backward()
            opt.step()
            total_loss += loss.item() * len(y)
            correct += int((out.argmax(1) == y).sum())
            seen += len(y)
        print(f"epoch {epoch + 1}: loss {total_loss / seen:.3f}  "
              f"accuracy {correct / seen:.1%}  ({time.perf_counter() - t0:.2f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
