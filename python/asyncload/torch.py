"""PyTorch integration: map-style Datasets whose files an asyncload loader reads.

    from asyncload.torch import FileDataset, ImageFolder, decode_image

    ds = ImageFolder("data/train", transform=lambda data: to_tensor(decode_image(data)),
                     n_workers=4 + 1)          # DataLoader workers + the main process
    loader = DataLoader(ds, batch_size=64, shuffle=True, num_workers=4)

This is the only module of the package that imports torch; ``import asyncload``
works without it.

How it fits DataLoader:

* The dataset owns one asyncload loader process. It starts when the dataset is
  created (or, with ``start=False``, on first use in the creating process) and
  stops with :meth:`FileDataset.close`, ``with dataset:``, garbage collection
  of the dataset, or interpreter exit, whichever comes first. The loader also
  exits by itself if the creating process dies (SIGKILL included), and its
  shared memory is an unnamed memfd, so nothing outlives the processes.
* Worker slots: DataLoader worker ``k`` (``get_worker_info().id``) uses slot
  ``k``; the main process (``num_workers=0``, or items fetched by hand) uses
  the last slot, ``n_workers - 1``. So pass ``n_workers >= num_workers + 1``
  (the default covers ``num_workers <= max(8, cpu_count)``).
* ``fork`` workers inherit the loader; ``spawn`` and ``forkserver`` workers
  receive the pickled dataset, which carries the loader's handle and attaches
  to the same loader process (never a new one).
* Non-persistent workers are new processes every epoch but reuse the ids of
  the previous epoch's; the library hands a slot over once its old holder is
  dead.
* ``__getitems__`` asks for a whole batch at once, keeping the worker's queue
  full, and runs ``transform`` on each file as soon as its bytes arrive, so
  decoding overlaps the reads of the rest of the batch.
"""

from __future__ import annotations

import errno
import io
import operator
import os
import threading
import time
import weakref
from contextlib import closing
from typing import (TYPE_CHECKING, Any, Callable, Deque, Dict, Iterable, List, Optional,
                    Sequence, Tuple, Union)

import torch.utils.data as _tud

from ._entry import Entry
from ._fill import fill
from ._loader import Loader
from ._worker import Worker
from ._lowlevel import PathArg

if TYPE_CHECKING:  # Pillow is optional: only decode_image() needs it
    from PIL import Image as _PILImage

__all__ = [
    "FileDataset",
    "FileStream",
    "ImageFolder",
    "decode_image",
    "find_classes",
    "IMG_EXTENSIONS",
    "DEFAULT_QUEUE_DEPTH",
    "DEFAULT_MAX_FILE_SIZE",
    "default_n_workers",
]

# torchvision's list, so an ImageFolder tree indexes to the same samples.
IMG_EXTENSIONS: Tuple[str, ...] = (
    ".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp",
)

# A DataLoader batch of 64 fits in flight at once. Memory is committed only
# for the bytes actually loaded, so a generous max_file_size costs address
# space, not RAM.
DEFAULT_QUEUE_DEPTH = 64
DEFAULT_MAX_FILE_SIZE = 64 << 20

# Non-persistent workers of the next epoch may start while the previous
# epoch's worker with the same id is still exiting; its slot frees up once it
# is dead, so a busy slot is retried this long before giving up.
_TAKEOVER_WAIT_S = 10.0

Transform = Callable[[memoryview], Any]


def default_n_workers() -> int:
    """Slots a dataset gets unless told: up to max(8, cpu_count) DataLoader
    workers plus one for the main process."""
    return max(8, os.cpu_count() or 1) + 1


def decode_image(data: Union[bytes, memoryview], mode: str = "RGB") -> "_PILImage.Image":
    """Decode an image file's bytes with Pillow, fully, into ``mode``.

    Safe as (part of) a transform: the returned image owns its pixels, so
    nothing refers to ``data`` once this returns.
    """
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        return im.convert(mode)


def _stop_loader(loader: Loader, owner_pid: int) -> None:
    """Finalizer of a dataset: stop its loader, but only in the process that
    started it (forked children inherit the finalizer and must not)."""
    if os.getpid() != owner_pid:
        return
    try:
        loader.shutdown()
    except OSError:
        pass
    loader.close()


def _claim_slot(loader: Loader, sid: int, who: str) -> Worker:
    """Claim worker slot ``sid`` for this process, waiting up to
    _TAKEOVER_WAIT_S while a previous holder (last epoch's worker) exits."""
    worker = loader.get_worker_context(sid)
    deadline = time.monotonic() + _TAKEOVER_WAIT_S
    while True:
        try:
            worker.claim()
            return worker
        except OSError as e:
            if e.errno != errno.EBUSY or time.monotonic() >= deadline:
                if e.errno == errno.EBUSY:
                    raise RuntimeError(
                        f"asyncload.torch: worker slot {sid} ({who}) is held by another "
                        "live process; two DataLoaders iterating the same dataset at "
                        "once, or n_workers < num_workers + 1 after the main process "
                        "read items itself?") from e
                raise
        # the previous epoch's worker with this id is still exiting
        time.sleep(0.02)


def _entry_item(entry: Entry, make: Callable[[memoryview], Any]) -> Any:
    """``make(data)`` of a completed entry, then the entry released; raises
    LoadError for a failed load and BufferError if the item still views the
    shared memory."""
    try:
        entry.raise_for_error()
        data = entry.data
        try:
            item = make(data)
        finally:
            del data
        try:
            entry.release()
        except BufferError as e:
            raise BufferError(
                f"asyncload.torch: the item made from {entry.path!r} still refers to the "
                "file's shared-memory buffer, which is only valid during the transform; "
                "copy it (e.g. bytes(data), torch.frombuffer(...).clone())") from e
        return item
    finally:
        if not entry.released:
            try:
                entry.release()
            except BufferError:
                pass  # the entry's own finalizer gives the slot back later


class _Slot:
    """This process's claim on one worker slot, with the lock that keeps two
    threads from mixing their batches' entries."""

    __slots__ = ("pid", "worker", "lock")

    def __init__(self, worker: Worker) -> None:
        self.pid = os.getpid()
        self.worker = worker
        self.lock = threading.Lock()


class FileDataset(_tud.Dataset):
    """A map-style Dataset over a list of files, read by an asyncload loader.

    Item ``i`` is ``transform(data)``, where ``data`` is a read-only
    memoryview of file ``i``'s bytes in shared memory, valid only during the
    call (copy what must outlive it; returning a view of it raises
    BufferError), or the file's ``bytes`` when ``transform`` is None.

    ``loader_options`` go to :class:`asyncload.Loader`: ``queue_depth``
    (default 64), ``max_file_size`` (64 MiB), ``n_workers`` (must be at least
    DataLoader ``num_workers + 1``; default :func:`default_n_workers`),
    ``dispatch_n``, ``idle_iters``, ``direct``, ``root``.

    ``start=False`` defers the loader process to the first use in this
    process (an item, ``len()``, pickling, :meth:`start`). Start it before
    handing the dataset to ``fork`` DataLoader workers: a worker cannot start
    the shared loader for its siblings.

    A file that cannot be read raises :class:`asyncload.LoadError` (errno and
    filename set); through a DataLoader worker the main process gets the
    exception re-raised with the path in its message.
    """

    def __init__(self, paths: Iterable[PathArg], transform: Optional[Transform] = None, *,
                 start: bool = True, **loader_options: Any) -> None:
        # Requests are made with these exact strings, and completed entries
        # report the string they were requested with, which matches them up.
        self._paths: List[str] = [os.fsdecode(os.fspath(p)) for p in paths]
        self.transform = transform
        opts: Dict[str, Any] = {
            "queue_depth": DEFAULT_QUEUE_DEPTH,
            "max_file_size": DEFAULT_MAX_FILE_SIZE,
            "n_workers": default_n_workers(),
        }
        opts.update(loader_options)
        if opts["n_workers"] < 1:
            raise ValueError("n_workers must be at least 1 (the main process's slot)")
        self._options = opts
        self._loader: Optional[Loader] = None
        self._owner_pid = os.getpid()
        self._owner = True
        self._closed = False
        self._slot: Optional[_Slot] = None
        self._finalizer: Optional[weakref.finalize] = None
        self._start_lock = threading.Lock()
        if start:
            self.start()

    # -- lifecycle --------------------------------------------------------

    def start(self) -> Loader:
        """Start the loader process if it is not running yet; returns the Loader.

        Only the process that created the dataset can start it.
        """
        loader = self._loader
        if loader is not None and not loader.closed:
            return loader
        if self._closed:
            raise ValueError("this dataset was closed")
        if not self._owner or os.getpid() != self._owner_pid:
            raise RuntimeError(
                "asyncload.torch: the dataset's loader was not started before this process "
                "was forked; call dataset.start() (or create it with start=True) before "
                "creating DataLoader workers")
        with self._start_lock:
            if self._loader is None:
                loader = Loader(**self._options)
                try:
                    loader.spawn_loader()
                except BaseException:
                    loader.close()
                    raise
                self._finalizer = weakref.finalize(self, _stop_loader, loader, os.getpid())
                self._loader = loader
            assert self._loader is not None
            return self._loader

    def close(self) -> None:
        """Stop the loader process and unmap its memory (idempotent).

        In a DataLoader worker, or any process other than the one that
        started the loader, this only drops this object's references: the
        loader keeps serving the other processes.
        """
        self._closed = True
        self._slot = None
        fin, self._finalizer = self._finalizer, None
        loader, self._loader = self._loader, None
        if fin is not None:
            fin()  # runs _stop_loader once, in the owner only
        del loader

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> "FileDataset":
        if self._owner and os.getpid() == self._owner_pid:
            self.start()
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.close()

    @property
    def loader(self) -> Loader:
        """The running :class:`asyncload.Loader` (started if need be)."""
        return self._live_loader()

    def _live_loader(self) -> Loader:
        if self._closed:
            raise ValueError("this dataset was closed")
        loader = self._loader
        if loader is None or loader.closed:
            return self.start()
        return loader

    # -- pickling (spawn / forkserver workers) ----------------------------

    def __getstate__(self) -> Dict[str, Any]:
        # The loader must run before its handle can travel; the copy attaches
        # to this same loader instead of making one.
        self._live_loader()
        state = self.__dict__.copy()
        state["_owner"] = False
        state["_slot"] = None
        state["_finalizer"] = None
        state["_start_lock"] = None
        return state

    def __setstate__(self, state: Dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._start_lock = threading.Lock()

    # -- worker slot of this process ---------------------------------------

    def _claim(self) -> _Slot:
        slot = self._slot
        pid = os.getpid()
        if slot is not None and slot.pid == pid:
            return slot
        loader = self._live_loader()
        info = _tud.get_worker_info()
        last = loader.n_workers - 1
        if info is None:
            sid = last
        else:
            if info.num_workers > last:
                raise ValueError(
                    f"asyncload.torch: DataLoader num_workers={info.num_workers} needs a "
                    f"dataset with n_workers >= {info.num_workers + 1} (one slot per "
                    f"worker plus one for the main process); this one has {loader.n_workers}")
            sid = info.id
        who = "the main process" if sid == last else f"DataLoader worker {sid}"
        worker = _claim_slot(loader, sid, who)
        slot = _Slot(worker)
        self._slot = slot
        return slot

    @property
    def worker(self) -> Worker:
        """The :class:`asyncload.Worker` slot this process reads through
        (claimed on first access): DataLoader worker k's is slot k, the main
        process's is slot ``n_workers - 1``."""
        return self._claim().worker

    # -- items -------------------------------------------------------------

    @property
    def paths(self) -> List[str]:
        """The files, in index order."""
        return self._paths

    def __len__(self) -> int:
        return len(self._paths)

    def _make_item(self, data: memoryview, index: int) -> Any:
        """The item for ``index`` from its file's bytes (subclasses add targets)."""
        if self.transform is None:
            return bytes(data)
        return self.transform(data)

    def _convert(self, entry: Entry, index: int) -> Any:
        """Run _make_item on a completed entry and hand the entry back."""
        return _entry_item(entry, lambda data: self._make_item(data, index))

    def __getitem__(self, index: int) -> Any:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: Sequence[int]) -> List[Any]:
        """The items of a whole batch, in the order of ``indices``.

        Requests as many files as the queue has free entries, converts each
        as it completes, and refills the queue, so reads overlap each other
        and the transforms. The first failure is raised once every request
        of the batch has completed (so none leaks into the next batch).
        """
        idx = [operator.index(i) for i in indices]
        paths = [self._paths[i] for i in idx]
        n = len(paths)
        out: List[Any] = [None] * n
        if n == 0:
            return out
        slot = self._claim()
        with slot.lock:
            # Tags are positions in the batch, so a file named twice (sampling
            # with replacement) still lands each copy in its own place.
            failure: Optional[BaseException] = None
            # closing(): an interrupt (Ctrl-C, loader gone) still collects what
            # was asked for, so the next batch starts with an empty queue.
            with closing(fill(slot.worker, paths, who="asyncload.torch")) as entries:
                for entry in entries:
                    if failure is not None:
                        entry.release()
                        continue
                    try:
                        out[entry.tag] = self._convert(entry, idx[entry.tag])
                    except Exception as e:
                        failure = e
            if failure is not None:
                raise failure
        return out

    def __repr__(self) -> str:
        state = "closed" if self._closed else (
            "not started" if self._loader is None else repr(self._loader))
        return f"<{type(self).__name__} {len(self._paths)} files, {state}>"


def find_classes(root: PathArg) -> Tuple[List[str], Dict[str, int]]:
    """The class folders of ``root``, sorted, and their indices (torchvision's rule)."""
    classes = sorted(e.name for e in os.scandir(root) if e.is_dir())
    if not classes:
        raise FileNotFoundError(errno.ENOENT, "no class folder found", os.fsdecode(root))
    return classes, {c: i for i, c in enumerate(classes)}


def _has_extension(path: str, extensions: Tuple[str, ...]) -> bool:
    return path.lower().endswith(extensions)


class ImageFolder(FileDataset):
    """The torchvision folder layout, read through asyncload.

    ``root/<class>/**/<file>``: class folders sorted by name give the
    targets 0..C-1; files with one of ``extensions`` (case-insensitive;
    default :data:`IMG_EXTENSIONS`) or accepted by ``is_valid_file`` are the
    samples, sorted. Item ``i`` is ``(transform(data), target)``, ``data``
    being the raw file bytes as in :class:`FileDataset` (decode them in the
    transform, e.g. with :func:`decode_image`).

    Attributes as torchvision's: ``classes``, ``class_to_idx``, ``samples``
    (list of ``(path, target)``), ``targets``, ``imgs``.
    """

    def __init__(self, root: PathArg, transform: Optional[Transform] = None,
                 target_transform: Optional[Callable[[int], Any]] = None, *,
                 extensions: Optional[Tuple[str, ...]] = None,
                 is_valid_file: Optional[Callable[[str], bool]] = None,
                 allow_empty: bool = False, start: bool = True,
                 **loader_options: Any) -> None:
        if extensions is not None and is_valid_file is not None:
            raise ValueError("give either extensions or is_valid_file, not both")
        if is_valid_file is None:
            exts = tuple(e.lower() for e in (extensions or IMG_EXTENSIONS))

            def is_valid_file(path: str) -> bool:
                return _has_extension(path, exts)

        self.root = os.fsdecode(os.fspath(root))
        self.classes, self.class_to_idx = find_classes(self.root)
        self.target_transform = target_transform
        samples: List[Tuple[str, int]] = []
        empty: List[str] = []
        for cls in self.classes:
            target = self.class_to_idx[cls]
            before = len(samples)
            cls_dir = os.path.join(self.root, cls)
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
                "(pass allow_empty=True to keep them)", self.root)
        self.samples = samples
        self.targets = [t for _, t in samples]
        super().__init__([p for p, _ in samples], transform, start=start, **loader_options)

    @property
    def imgs(self) -> List[Tuple[str, int]]:
        return self.samples

    def _make_item(self, data: memoryview, index: int) -> Tuple[Any, Any]:
        sample = bytes(data) if self.transform is None else self.transform(data)
        target: Any = self.targets[index]
        if self.target_transform is not None:
            target = self.target_transform(target)
        return sample, target


def __getattr__(name: str) -> Any:
    # FileStream lives in _stream, which builds on this module's helpers: a
    # lazy re-export works whichever of the two is imported first (spawn
    # workers unpickle asyncload._stream.FileStream before this module).
    if name == "FileStream":
        from ._stream import FileStream
        return FileStream
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
