"""A stand-in for torchvision.datasets.ImageFolder, for the drop-in tests.

torchvision cannot run in CI: the only build on PyPI is the CUDA one, whose
extension needs libtorch_cuda.so, so ``import torchvision`` fails next to
the CPU torch we install. This is a plain PIL Dataset that behaves as
torchvision's ImageFolder does (its documented indexing rules and
pil_loader), written from that behaviour; test_imagefolder.py compares
asyncload.torch.ImageFolder against the real one wherever torchvision
imports, and against this one elsewhere.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Dict, List, Optional, Tuple

from PIL import Image
from torch.utils.data import Dataset

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def pil_loader(path: str) -> Image.Image:
    with open(path, "rb") as f:
        img = Image.open(f)
        return img.convert("RGB")


class ImageFolder(Dataset):
    def __init__(self, root: str, transform: Optional[Callable[[Any], Any]] = None,
                 target_transform: Optional[Callable[[int], Any]] = None,
                 loader: Callable[[str], Any] = pil_loader,
                 is_valid_file: Optional[Callable[[str], bool]] = None,
                 allow_empty: bool = False) -> None:
        self.root = root
        self.transform = transform
        self.target_transform = target_transform
        self.loader = loader
        self.extensions = IMG_EXTENSIONS if is_valid_file is None else None
        self.classes = sorted(e.name for e in os.scandir(root) if e.is_dir())
        if not self.classes:
            raise FileNotFoundError(f"Couldn't find any class folder in {root}.")
        self.class_to_idx: Dict[str, int] = {c: i for i, c in enumerate(self.classes)}
        if is_valid_file is None:
            def is_valid_file(p: str) -> bool:
                return p.lower().endswith(IMG_EXTENSIONS)
        self.samples: List[Tuple[str, int]] = []
        empty = []
        for cls in sorted(self.class_to_idx):
            before = len(self.samples)
            for d, _, names in sorted(os.walk(os.path.join(root, cls), followlinks=True)):
                for name in sorted(names):
                    path = os.path.join(d, name)
                    if is_valid_file(path):
                        self.samples.append((path, self.class_to_idx[cls]))
            if len(self.samples) == before:
                empty.append(cls)
        if empty and not allow_empty:
            raise FileNotFoundError(f"Found no valid file for the classes {', '.join(empty)}.")
        self.targets = [t for _, t in self.samples]
        self.imgs = self.samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> Tuple[Any, Any]:
        path, target = self.samples[index]
        sample = self.loader(path)
        if self.transform is not None:
            sample = self.transform(sample)
        if self.target_transform is not None:
            target = self.target_transform(target)
        return sample, target
