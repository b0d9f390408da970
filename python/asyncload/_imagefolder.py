"""asyncload.torch.ImageFolder: torchvision's ImageFolder, read through asyncload.

A drop-in for ``torchvision.datasets.ImageFolder``: the same constructor
arguments, attributes and samples (PIL images in RGB, decoded by Pillow), so
a training script changes only its import line. Images are decoded straight
from the loader's shared memory (no copy of the file first), and the dataset
needs no worker count: it takes worker slots as DataLoader workers come
(see asyncload.torch's notes).

Import it from ``asyncload.torch``, which re-exports it (looking it up here
on first use, since this module subclasses ``asyncload.torch.FileDataset``).
"""

from __future__ import annotations

import errno
import io
import os
import sys
import warnings
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

from ._lowlevel import PathArg
from .torch import Decode, FileDataset, Transform

if TYPE_CHECKING:  # Pillow is imported when the first image is decoded
    from PIL import Image as _PILImage

__all__ = ["ImageFolder", "IMG_EXTENSIONS", "decode_image", "default_loader", "find_classes",
           "pil_loader"]

# torchvision's list, so an ImageFolder tree indexes to the same samples.
IMG_EXTENSIONS: Tuple[str, ...] = (
    ".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp",
)

PathLoader = Callable[[str], Any]


class _ViewReader(io.RawIOBase):
    """A read-only, seekable file over a buffer, so Pillow decodes straight
    from shared memory: it copies only the chunks its decoder asks for,
    never the whole file (io.BytesIO would copy it all first). close()
    drops the view, so the entry can be released afterwards."""

    def __init__(self, data: Union[bytes, memoryview]) -> None:
        super().__init__()
        view = memoryview(data)
        self._view: Optional[memoryview] = view if view.format == "B" else view.cast("B")
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def _live(self) -> memoryview:
        if self._view is None:
            raise ValueError("I/O operation on closed file")
        return self._view

    def read(self, size: Optional[int] = -1) -> bytes:
        # Pillow's parsers read a few bytes at a time: answered here directly,
        # not through RawIOBase's read -> readinto round trip.
        view = self._live()
        start = self._pos
        end = len(view) if size is None or size < 0 else min(len(view), start + size)
        if end <= start:
            return b""
        self._pos = end
        return view[start:end].tobytes()

    def readall(self) -> bytes:
        return self.read(-1)

    def readinto(self, buf: Any) -> int:
        view = self._live()
        with memoryview(buf) as out, out.cast("B") as dst:
            n = max(0, min(len(dst), len(view) - self._pos))
            dst[:n] = view[self._pos:self._pos + n]
        self._pos += n
        return n

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        size = len(self._live())
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: size}.get(whence)
        if base is None:
            raise ValueError(f"invalid whence ({whence})")
        pos = base + offset
        if pos < 0:
            raise ValueError(f"negative seek position {pos}")
        self._pos = pos
        return pos

    def tell(self) -> int:
        self._live()
        return self._pos

    def close(self) -> None:
        view, self._view = self._view, None
        if view is not None:
            view.release()
        super().close()


def decode_image(data: Union[bytes, memoryview], mode: str = "RGB") -> "_PILImage.Image":
    """Decode an image file's bytes with Pillow, fully, into ``mode``
    (ImageFolder's default ``decode``: what torchvision's loader gives).

    Reads ``data`` in place. The returned image owns its pixels, so nothing
    refers to ``data`` once this returns.
    """
    from PIL import Image

    with _ViewReader(data) as f, Image.open(f) as im:
        return im.convert(mode)


def pil_loader(path: str) -> "_PILImage.Image":
    """torchvision's ``pil_loader``: the image at ``path`` in RGB. Given as
    ``loader=``, ImageFolder reads through asyncload all the same."""
    from PIL import Image

    with open(path, "rb") as f, Image.open(f) as im:
        return im.convert("RGB")


def default_loader(path: str) -> "_PILImage.Image":
    """torchvision's ``default_loader`` with the PIL backend (ImageFolder's
    ``loader`` unless one is given)."""
    return pil_loader(path)


def _is_pil_path_loader(fn: Any) -> bool:
    """Whether a loader= gives what decode_image gives, so the async path can stand in."""
    if fn is pil_loader or fn is default_loader:
        return True
    if getattr(fn, "__module__", None) != "torchvision.datasets.folder":
        return False
    name = getattr(fn, "__name__", None)
    if name == "pil_loader":
        return True
    if name == "default_loader":
        # torchvision's default_loader gives accimage images under that backend
        tv = sys.modules.get("torchvision")
        return tv is None or tv.get_image_backend() == "PIL"
    return False


_warned_path_loader = False


def _warn_path_loader(fn: Any) -> None:
    global _warned_path_loader
    if _warned_path_loader:
        return
    _warned_path_loader = True
    warnings.warn(
        f"asyncload.torch.ImageFolder: loader={getattr(fn, '__name__', fn)!r} opens files by "
        "path, so they are read by that function in the DataLoader worker, one at a time, "
        "like torchvision's ImageFolder: none of asyncload's reads ahead. To read through "
        "asyncload, pass decode= instead (a function from the file's bytes to the sample); "
        "torchvision's default_loader and pil_loader are mapped to that path already.",
        UserWarning, stacklevel=3)


def find_classes(root: PathArg) -> Tuple[List[str], Dict[str, int]]:
    """The class folders of ``root``, sorted, and their indices (torchvision's rule)."""
    classes = sorted(e.name for e in os.scandir(root) if e.is_dir())
    if not classes:
        raise FileNotFoundError(errno.ENOENT, "no class folder found", os.fsdecode(root))
    return classes, {c: i for i, c in enumerate(classes)}


_DEFAULT: Any = object()  # decode= not given


class ImageFolder(FileDataset):
    """``torchvision.datasets.ImageFolder``, read through asyncload.

    ``root/<class>/**/<file>``: class folders sorted by name give the
    targets 0..C-1; files with one of ``extensions`` (case-insensitive;
    default :data:`IMG_EXTENSIONS`) or accepted by ``is_valid_file`` are the
    samples, sorted. Item ``i`` is ``(transform(image), target_transform(target))``
    where ``image`` is the file decoded by Pillow into RGB, as torchvision's.

    Arguments as torchvision's: ``root, transform, target_transform, loader,
    is_valid_file, allow_empty``. ``loader`` (a path-to-sample function):
    torchvision's ``default_loader``/``pil_loader`` (and ours) read through
    asyncload; any other one is called with each path and reads nothing
    ahead (a warning says so). Ours beyond torchvision's: ``decode`` (a
    bytes-to-sample function, given the file's read-only view, valid during
    the call; ``None`` for the raw bytes: ``transform`` then gets the view),
    ``extensions``, ``start`` and the loader options of
    :class:`asyncload.torch.FileDataset` (no worker count needed).

    Attributes as torchvision's: ``root``, ``classes``, ``class_to_idx``,
    ``samples`` (list of ``(path, target)``), ``targets``, ``imgs``,
    ``extensions``, ``transform``, ``target_transform``, ``loader``; the
    asyncload Loader is ``async_loader``.
    """

    def __init__(self, root: PathArg, transform: Optional[Transform] = None,
                 target_transform: Optional[Callable[[int], Any]] = None,
                 loader: Optional[PathLoader] = None,
                 is_valid_file: Optional[Callable[[str], bool]] = None,
                 allow_empty: bool = False, *,
                 extensions: Optional[Tuple[str, ...]] = None,
                 decode: Optional[Decode] = _DEFAULT, start: bool = True,
                 **loader_options: Any) -> None:
        if extensions is not None and is_valid_file is not None:
            raise ValueError("give either extensions or is_valid_file, not both")
        if loader is not None and decode is not _DEFAULT and not _is_pil_path_loader(loader):
            raise ValueError("give either loader= (by path) or decode= (from bytes), not both")
        self.root = os.fsdecode(os.fspath(root))
        self.extensions: Optional[Tuple[str, ...]] = (
            None if is_valid_file is not None else tuple(extensions or IMG_EXTENSIONS))
        self.classes, self.class_to_idx = self.find_classes(self.root)
        self.target_transform = target_transform
        self.samples = self.make_dataset(self.root, self.class_to_idx, self.extensions,
                                         is_valid_file, allow_empty)
        self.targets = [t for _, t in self.samples]
        self._path_loader: PathLoader = default_loader
        self._reads_async = True
        if loader is not None:
            self._set_path_loader(loader)
        if decode is _DEFAULT:
            decode = decode_image if self._reads_async else None
        super().__init__([p for p, _ in self.samples], transform, decode=decode,
                         start=start and self._reads_async, **loader_options)

    # -- torchvision's indexing ---------------------------------------------

    def find_classes(self, directory: str) -> Tuple[List[str], Dict[str, int]]:
        """The classes of ``directory`` and their indices; override it to
        choose them differently (as with torchvision's)."""
        return find_classes(directory)

    @staticmethod
    def make_dataset(directory: str, class_to_idx: Dict[str, int],
                     extensions: Optional[Tuple[str, ...]] = None,
                     is_valid_file: Optional[Callable[[str], bool]] = None,
                     allow_empty: bool = False) -> List[Tuple[str, int]]:
        """``(path, target)`` of every valid file under the class folders,
        in torchvision's order."""
        if (extensions is None) == (is_valid_file is None):
            raise ValueError("give either extensions or is_valid_file, not both")
        if is_valid_file is None:
            exts = tuple(e.lower() for e in extensions or ())

            def is_valid_file(path: str) -> bool:
                return path.lower().endswith(exts)

        samples: List[Tuple[str, int]] = []
        empty: List[str] = []
        for cls in sorted(class_to_idx):
            target = class_to_idx[cls]
            cls_dir = os.path.join(directory, cls)
            if not os.path.isdir(cls_dir):
                continue
            before = len(samples)
            for dirpath, _dirs, fnames in sorted(os.walk(cls_dir, followlinks=True)):
                for fname in sorted(fnames):
                    path = os.path.join(dirpath, fname)
                    if is_valid_file(path):
                        samples.append((path, target))
            if len(samples) == before:
                empty.append(cls)
        if empty and not allow_empty:
            raise FileNotFoundError(
                errno.ENOENT,
                f"no valid file in class folder(s) {', '.join(empty)} "
                "(pass allow_empty=True to keep them)", directory)
        return samples

    @property
    def imgs(self) -> List[Tuple[str, int]]:
        return self.samples

    # -- loader: torchvision's meaning ---------------------------------------

    @property
    def loader(self) -> PathLoader:
        """The path-to-sample function, as torchvision's (the asyncload
        Loader is :attr:`async_loader`)."""
        return self._path_loader

    @loader.setter
    def loader(self, fn: PathLoader) -> None:
        self._set_path_loader(fn)
        if not self._reads_async:
            self.decode = None

    def _set_path_loader(self, fn: PathLoader) -> None:
        if not callable(fn):
            raise TypeError(f"loader must be a function of a path, not {type(fn).__name__}")
        self._path_loader = fn
        self._reads_async = _is_pil_path_loader(fn)
        if not self._reads_async:
            _warn_path_loader(fn)

    # -- items ---------------------------------------------------------------

    def _make_item(self, sample: Any, index: int) -> Tuple[Any, Any]:
        target: Any = self.targets[index]
        if self.target_transform is not None:
            target = self.target_transform(target)
        return sample, target

    def __getitems__(self, indices: Sequence[int]) -> List[Any]:
        if self._reads_async:
            return super().__getitems__(indices)
        out = []
        for i in indices:  # a path loader: torchvision's way, one file at a time
            sample = self._path_loader(self.samples[i][0])
            if self.transform is not None:
                sample = self.transform(sample)
            out.append(self._make_item(sample, i))
        return out

    def stream(self, **kwargs: Any) -> Any:
        """These samples as an :class:`asyncload.torch.FileStream` (an
        IterableDataset that shuffles and shards by itself), with this
        dataset's transform, decode, targets (after target_transform) and
        loader options; ``kwargs`` add to or override FileStream's."""
        from ._stream import FileStream
        if not self._reads_async:
            raise ValueError("stream() reads through asyncload; this ImageFolder has a "
                             f"path loader ({self._path_loader!r}); use decode= instead")
        targets: List[Any] = list(self.targets)
        if self.target_transform is not None:
            targets = [self.target_transform(t) for t in targets]
        # n_workers is not passed on: FileStream sizes its slots per rank itself
        opts = {k: v for k, v in self._options.items() if k != "n_workers"}
        opts.update(kwargs)
        opts.setdefault("decode", self.decode)
        return FileStream(self.paths, self.transform, targets=targets, **opts)

    def __repr__(self) -> str:
        lines = [f"Dataset {type(self).__name__} (asyncload)",
                 f"    Number of datapoints: {len(self)}",
                 f"    Root location: {self.root}"]
        if self.transform is not None:
            lines.append(f"    Transform: {self.transform!r}")
        if self.target_transform is not None:
            lines.append(f"    Target transform: {self.target_transform!r}")
        return "\n".join(lines)


# Pickles (spawn workers) and reprs name it where users import it from.
for _obj in (ImageFolder, decode_image, pil_loader, default_loader, find_classes):
    _obj.__module__ = "asyncload.torch"
del _obj
