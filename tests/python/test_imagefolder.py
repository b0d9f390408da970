"""asyncload.torch.ImageFolder as a drop-in for torchvision.datasets.ImageFolder.

The main test takes a training script's data part written for torchvision's
ImageFolder (PIL transform pipeline with random crops and flips, shuffle,
num_workers 0 and 2, fork and spawn, persistent workers and a DataLoader
re-created each epoch), writes it twice with only the import line changed,
and checks both give the same tensors, targets and attributes. The
reference is torchvision where it imports, else tv_standin (see there why).
Then: decode=, the path loader=, zero-copy decoding, the attributes.
"""

from __future__ import annotations

import importlib
import io
import os
import sys
import tracemalloc
import warnings
from typing import Any, List, Tuple

import pytest

import numpy as np  # noqa: E402  (torch's own dependency)
import torch  # noqa: E402
from PIL import Image  # noqa: E402

import asyncload.torch as at  # noqa: E402
from asyncload.torch import FileDataset, ImageFolder  # noqa: E402


def _reference_import() -> str:
    try:
        importlib.import_module("torchvision.datasets")
        return "from torchvision.datasets import ImageFolder"
    except Exception:  # not installed, or the CUDA build next to a CPU torch
        return "from tv_standin import ImageFolder"


SCRIPT = '''"""The data part of a training script, written for torchvision's ImageFolder."""
import torch
from PIL import Image
from torch.utils.data import DataLoader
{import_line}


class Compose:
    def __init__(self, ts):
        self.ts = ts

    def __call__(self, x):
        for t in self.ts:
            x = t(x)
        return x


class Resize:
    def __init__(self, size):
        self.size = size

    def __call__(self, img):
        return img.resize(self.size, Image.BILINEAR)


class RandomCrop:
    def __init__(self, side):
        self.side = side

    def __call__(self, img):
        w, h = img.size
        top = int(torch.randint(0, h - self.side + 1, (1,)))
        left = int(torch.randint(0, w - self.side + 1, (1,)))
        return img.crop((left, top, left + self.side, top + self.side))


class RandomHorizontalFlip:
    def __call__(self, img):
        return img.transpose(Image.FLIP_LEFT_RIGHT) if torch.rand(1) < 0.5 else img


class ToTensor:
    def __call__(self, img):
        w, h = img.size
        t = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8)
        return t.view(h, w, len(img.getbands())).permute(2, 0, 1).float().div(255)


train_transforms = Compose([Resize((24, 20)), RandomCrop(16), RandomHorizontalFlip(), ToTensor()])


def run(root, num_workers, context, epochs, persistent):
    torch.manual_seed(0)
    dataset = ImageFolder(root, transform=train_transforms)
    g = torch.Generator().manual_seed(1)
    args = dict(batch_size=5, shuffle=True, num_workers=num_workers, generator=g)
    if num_workers:
        args.update(multiprocessing_context=context, persistent_workers=persistent)
    batches = []
    dl = DataLoader(dataset, **args)
    for epoch in range(epochs):
        if not persistent:
            dl = DataLoader(dataset, **args)  # re-created each epoch
        for images, labels in dl:
            batches.append((images, labels))
    return dataset, batches
'''

N_CLASSES, PER_CLASS = 3, 7


def _make_tree(root: str) -> None:
    """Images of every mode and format ImageFolder meets, and files it must skip."""
    rng = np.random.default_rng(0)
    kinds = [("png", "RGBA"), ("jpg", "RGB"), ("bmp", "L"), ("png", "P"), ("JPEG", "L"),
             ("webp", "RGB"), ("ppm", "RGB")]
    for c in range(N_CLASSES):
        d = os.path.join(root, f"class_{c}", "nested" if c == 1 else "")
        os.makedirs(d, exist_ok=True)
        for i in range(PER_CLASS):
            ext, mode = kinds[i % len(kinds)]
            a = rng.integers(0, 256, (20 + i + c, 24 + 2 * i, 3), dtype=np.uint8)
            Image.fromarray(a).convert(mode).save(os.path.join(d, f"img{i}.{ext}"))
        with open(os.path.join(d, "notes.txt"), "w") as f:
            f.write("not an image")


@pytest.fixture(scope="module")
def scripts(tmp_path_factory: Any) -> Tuple[str, Any, Any]:
    base = tmp_path_factory.mktemp("imagefolder")
    root = str(base / "train")
    _make_tree(root)
    here = os.path.dirname(os.path.abspath(__file__))
    mods = []
    for name, line in (("script_reference", _reference_import()),
                       ("script_asyncload", "from asyncload.torch import ImageFolder")):
        (base / f"{name}.py").write_text(SCRIPT.format(import_line=line))
    # spawn workers unpickle the transforms by module name: both folders on sys.path
    for p in (str(base), here):
        if p not in sys.path:
            sys.path.insert(0, p)
    for name in ("script_reference", "script_asyncload"):
        mods.append(importlib.import_module(name))
    return root, mods[0], mods[1]


def _same_batches(a: List[Any], b: List[Any]) -> None:
    assert len(a) == len(b)
    for (xa, ya), (xb, yb) in zip(a, b):
        assert torch.equal(ya, yb)
        assert xa.shape == xb.shape and torch.equal(xa, xb)


@pytest.mark.deadline(90)  # spawn workers import torch: seconds each on a busy machine
@pytest.mark.parametrize("num_workers,context,epochs,persistent", [
    (0, None, 2, False),
    (2, "fork", 2, False),   # new workers each epoch: slots freed and taken again
    (2, "spawn", 2, True),
], ids=["main", "fork-recreated", "spawn-persistent"])
def test_script_runs_with_only_its_import_changed(scripts: Any, num_workers: int,
                                                  context: Any, epochs: int,
                                                  persistent: bool) -> None:
    root, ref, ours = scripts
    # Workers seed their RNG the same way under every start method, so the
    # reference runs with fork only (spawning torch workers is what costs).
    ref_ds, ref_batches = ref.run(root, num_workers, context and "fork", epochs, persistent)
    ds, batches = ours.run(root, num_workers, context, epochs, persistent)
    try:
        assert isinstance(ds, ImageFolder)
        for attr in ("classes", "class_to_idx", "samples", "targets", "imgs", "extensions"):
            assert getattr(ds, attr) == getattr(ref_ds, attr), attr
        assert len(ds) == len(ref_ds) == N_CLASSES * PER_CLASS
        _same_batches(ref_batches, batches)
        # every image once per epoch, and the random transforms did vary
        per_epoch = -(-len(ds) // 5)
        for e in range(epochs):
            labels = torch.cat([y for _, y in batches[e * per_epoch:(e + 1) * per_epoch]])
            assert sorted(labels.tolist()) == sorted(ds.targets)
        assert not torch.equal(batches[0][0], batches[per_epoch][0])
    finally:
        ds.close()


def test_samples_are_torchvisions(scripts: Any) -> None:
    root, ref, _ = scripts
    with ImageFolder(root) as ds:
        ref_ds = ref.ImageFolder(root)
        items = ds.__getitems__(list(range(len(ds)))[::-1])
        for i, (img, target) in zip(range(len(ds) - 1, -1, -1), items):
            want, want_target = ref_ds[i]
            assert isinstance(img, Image.Image) and img.mode == "RGB"
            assert img.size == want.size and img.tobytes() == want.tobytes()
            assert target == want_target
        # the loader attribute keeps torchvision's meaning; ours moved
        assert ds.loader(ds.samples[0][0]).tobytes() == ds[0][0].tobytes()
        assert isinstance(ds.async_loader, at.Loader if hasattr(at, "Loader") else object)
        assert ds.async_loader.running
        assert "Number of datapoints: 21" in repr(ds)


def test_decode_choices(scripts: Any) -> None:
    root = scripts[0]
    with ImageFolder(root, decode=None) as raw:
        data, target = raw[0]
        with open(raw.samples[0][0], "rb") as f:
            assert data == f.read() and isinstance(data, bytes) and target == 0
    with ImageFolder(root, decode=lambda d: len(d), transform=lambda n: -n,
                     target_transform=str) as ds:
        assert ds[3] == (-os.path.getsize(ds.samples[3][0]), "0")
        assert ds[len(ds) - 1][1] == str(N_CLASSES - 1)
    # decode= on FileDataset: any bytes-to-sample function; raw by default
    paths = [p for p, _ in ImageFolder(root, start=False).samples[:4]]
    with FileDataset(paths, decode=at.decode_image, transform=lambda im: im.size) as fd:
        assert fd.__getitems__([2, 0]) == [Image.open(paths[2]).size, Image.open(paths[0]).size]
    with FileDataset(paths) as fd:
        assert fd[1] == open(paths[1], "rb").read()
    # a decode that keeps the view is refused (the view is valid only during the call)
    with FileDataset(paths, decode=lambda d: d[1:]) as fd, pytest.raises(BufferError):
        fd[0]


def test_path_loader_costs_are_said_and_common_ones_are_mapped(scripts: Any,
                                                               monkeypatch: Any) -> None:
    root = scripts[0]
    calls: List[str] = []

    def my_loader(path: str) -> Any:
        calls.append(path)
        return at.pil_loader(path).convert("L")

    monkeypatch.setattr("asyncload._imagefolder._warned_path_loader", False)
    with pytest.warns(UserWarning, match="none of asyncload's reads ahead"):
        ds = ImageFolder(root, loader=my_loader)
    with ds:
        img, target = ds[5]
        assert calls == [ds.samples[5][0]] and img.mode == "L" and target == 0
        assert ds.loader is my_loader and ds._loader is None  # no loader process started
    with pytest.raises(ValueError, match="not both"):
        ImageFolder(root, loader=my_loader, decode=at.decode_image, start=False)

    # torchvision's pil_loader (by its module and name) reads through asyncload, silently
    def pil_loader(path: str) -> Any:
        raise AssertionError("must not be called")

    pil_loader.__module__ = "torchvision.datasets.folder"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with ImageFolder(root, loader=pil_loader) as ds:
            assert ds[0][0].mode == "RGB" and ds.loader is pil_loader
            assert ds.async_loader.running


def test_decoding_reads_in_place() -> None:
    """decode_image does not copy the file before decoding: a BytesIO would
    allocate the whole file; the in-place reader only Pillow's chunks."""
    rng = np.random.default_rng(1)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (700, 700, 3), dtype=np.uint8)).save(
        buf, "JPEG", quality=95)
    data = buf.getvalue()
    size = len(data)
    assert size > 400_000
    view = memoryview(data)
    tracemalloc.start()
    try:
        img = at.decode_image(view)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert img.size == (700, 700) and img.mode == "RGB"
    assert img.tobytes() == Image.open(io.BytesIO(data)).convert("RGB").tobytes()
    assert peak < size // 2, (peak, size)
    view.release()  # nothing kept a derived view


def test_arguments_and_errors(tmp_path: Any) -> None:
    root = tmp_path / "r"
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    Image.new("RGB", (4, 4)).save(root / "a" / "x.PNG")  # extensions match case-insensitively
    (root / "b" / "y.txt").write_text("y")
    with pytest.raises(FileNotFoundError, match="b"):
        ImageFolder(root, start=False)
    ds = ImageFolder(root, allow_empty=True, start=False)
    assert ds.samples == [(str(root / "a" / "x.PNG"), 0)] and ds.classes == ["a", "b"]
    ds = ImageFolder(str(root), None, None, None, lambda p: p.endswith(".txt"), True, start=False)
    assert ds.samples == [(str(root / "b" / "y.txt"), 1)] and ds.extensions is None
    with pytest.raises(FileNotFoundError):
        ImageFolder(root / "a", start=False)  # no class folder


def test_stream_carries_the_dataset(scripts: Any) -> None:
    root = scripts[0]
    ds = ImageFolder(root, target_transform=lambda t: t * 10, start=False)
    st = ds.stream(shuffle=False, ordered=True)
    assert isinstance(st, at.FileStream)
    got = list(st)
    assert [t for _, t in got] == [t * 10 for t in ds.targets]
    assert all(isinstance(im, Image.Image) and im.mode == "RGB" for im, _ in got)


def test_transforms_run_in_index_order_whatever_the_completion_order(
        scripts: Any, monkeypatch: Any) -> None:
    """Random transforms draw from the RNG in the batch's index order, as
    with a plain Dataset, even when files complete out of order (forced
    here by handing the completions back reversed)."""
    root = scripts[0]
    real_fill = at.fill

    def reversed_fill(*args: Any, **kwargs: Any) -> Any:
        yield from reversed(list(real_fill(*args, **kwargs)))

    monkeypatch.setattr(at, "fill", reversed_fill)
    decoded: List[int] = []
    transformed: List[int] = []

    def decode(data: memoryview) -> int:
        decoded.append(len(data))
        return len(data)

    def transform(n: int) -> Tuple[int, float]:
        transformed.append(n)
        return n, float(torch.rand(1))

    with ImageFolder(root, transform=transform, decode=decode) as ds:
        sizes = [os.path.getsize(p) for p, _ in ds.samples[:6]]
        torch.manual_seed(0)
        items = ds.__getitems__(list(range(6)))
        assert decoded == sizes[::-1] and transformed == sizes
        torch.manual_seed(0)
        assert [x for x, _ in items] == [(s, float(torch.rand(1))) for s in sizes]


def test_two_dataloaders_at_once_and_the_main_process_need_no_setting(scripts: Any) -> None:
    """Automatic slots: the main process and two DataLoaders' workers, all
    reading at the same time, each take a free slot."""
    import multiprocessing as mp
    from torch.utils.data import DataLoader

    root = scripts[0]
    with ImageFolder(root, transform=lambda im: im.size) as ds:
        first = ds[0]  # the main process holds a slot from here on
        ctx = mp.get_context("fork")
        a = DataLoader(ds, batch_size=4, num_workers=2, multiprocessing_context=ctx,
                       collate_fn=list)
        b = DataLoader(ds, batch_size=4, num_workers=1, multiprocessing_context=ctx,
                       collate_fn=list)
        got_a: List[Any] = []
        got_b: List[Any] = []
        for ba, bb in zip(a, b):
            got_a += ba
            got_b += bb
            assert ds[0] == first
        want = [ds[i] for i in range(len(ds))]
        assert got_a == want and got_b == want
        assert ds.async_loader.n_workers == at.auto_n_workers()
