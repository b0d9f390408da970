"""PyTorch integration: Datasets whose files an asyncload loader reads.

    from asyncload.torch import ImageFolder      # instead of torchvision.datasets

    ds = ImageFolder("data/train", transform=train_transforms)   # PIL pipeline
    loader = DataLoader(ds, batch_size=64, shuffle=True, num_workers=4)

This is the only module of the package that imports torch; ``import asyncload``
works without it. :class:`ImageFolder` lives in ``_imagefolder.py``.

How it fits DataLoader:

* The dataset owns one asyncload loader process. It starts when the dataset is
  created (or, with ``start=False``, on first use in the creating process) and
  stops with :meth:`FileDataset.close`, ``with dataset:``, garbage collection
  of the dataset, or interpreter exit, whichever comes first. The loader also
  exits by itself if the creating process dies (SIGKILL included), and its
  shared memory is an unnamed memfd, so nothing outlives the processes.
* Worker slots, automatic (``n_workers`` not given): the loader gets
  :func:`auto_n_workers` slots, far more than DataLoaders use (a slot costs
  address space; memory is committed only for bytes being loaded). Each
  process claims a free one on first use: DataLoader worker ``k`` tries slot
  ``k`` first, the main process the last slot, and either takes the next
  free slot if that one is held. So ``num_workers=0``, any ``num_workers``,
  persistent workers, a DataLoader re-created each epoch (whose new workers
  may start before the old ones have exited) and two DataLoaders at once
  need no setting. With ``n_workers`` given, the mapping is fixed: worker
  ``k`` uses slot ``k`` (waiting for its previous holder to exit), the main
  process slot ``n_workers - 1``, and ``n_workers >= num_workers + 1``.
* ``fork`` workers inherit the loader; ``spawn`` and ``forkserver`` workers
  receive the pickled dataset, which carries the loader's handle and attaches
  to the same loader process (never a new one).
* ``__getitems__`` asks for a whole batch at once, keeping the worker's queue
  full, and decodes each file as soon as its bytes arrive, so decoding
  overlaps the reads of the rest of the batch; ``transform`` then runs in
  the batch's index order (so random transforms draw from the RNG in the
  same order as with a plain Dataset). With ``decode=None`` the transform
  is the decoder and runs as each file arrives.
"""

from __future__ import annotations

import errno
import operator
import os
import threading
import time
import weakref
from contextlib import closing
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence

import torch.utils.data as _tud

from ._entry import Entry
from ._fill import fill
from ._loader import Loader
from ._worker import Worker
from ._lowlevel import PathArg, lib

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
    "auto_n_workers",
    "default_loader",
    "pil_loader",
]

# A DataLoader batch of 64 fits in flight at once. Memory is committed only
# for the bytes actually loaded, so a generous max_file_size costs address
# space, not RAM.
DEFAULT_QUEUE_DEPTH = 64
DEFAULT_MAX_FILE_SIZE = 64 << 20

# Non-persistent workers of the next epoch may start while the previous
# epoch's worker with the same id is still exiting; its slot frees up once it
# is dead, so a busy slot is retried this long before giving up.
_TAKEOVER_WAIT_S = 10.0

Transform = Callable[[Any], Any]
# bytes-to-sample: gets the file's read-only view, valid only during the call
Decode = Callable[[memoryview], Any]


def default_n_workers() -> int:
    """Slots a FileStream gets per rank unless told: up to max(8, cpu_count)
    DataLoader workers plus one for the main process."""
    return max(8, os.cpu_count() or 1) + 1


def auto_n_workers(queue_depth: int = DEFAULT_QUEUE_DEPTH) -> int:
    """Slots a FileDataset or ImageFolder gets unless told (automatic slots):
    room for max(64, 2 * cpu_count) DataLoader workers plus the main process,
    within the library's n_workers * queue_depth limit. Unused slots cost
    address space only."""
    want = max(64, 2 * (os.cpu_count() or 1)) + 1
    return max(1, min(want, int(lib.ASYNCLOAD_MAX_ENTRIES) // max(1, queue_depth)))


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


def _running_loader(ds: Any, whose: str, name: str) -> Optional[Loader]:
    """The running loader of a FileDataset or FileStream ``ds``, or None if this
    process may start it; raises ValueError once ``ds`` is closed and
    RuntimeError in a process forked before it was started (``whose``: whose
    loader, for the message; ``name``: what to call ``start()`` on)."""
    loader = ds._loader
    if loader is not None and not loader.closed:
        return loader
    if ds._closed:
        raise ValueError(f"this {name} was closed")
    if not ds._owner or os.getpid() != ds._owner_pid:
        raise RuntimeError(
            f"{whose} was not started before this process was forked; call {name}.start() "
            "(or create it with start=True) before creating DataLoader workers")
    return None


def _entry_item(entry: Entry, make: Callable[[memoryview], Any], what: str = "transform") -> Any:
    """``make(data)`` of a completed entry, then the entry released; raises
    LoadError for a failed load and BufferError if the item still views the
    shared memory (``what`` names ``make`` in that message)."""
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
                f"file's shared-memory buffer, which is only valid during the {what}; "
                "copy it (e.g. bytes(data), torch.frombuffer(...).clone())") from e
        return item
    finally:
        if not entry.released:
            try:
                entry.release()
            except BufferError:
                pass  # the entry's own finalizer gives the slot back later


_PENDING = object()


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

    Item ``i`` is ``transform(decode(data))``, where ``data`` is a read-only
    memoryview of file ``i``'s bytes in shared memory, valid only during
    ``decode`` (copy what must outlive it; keeping a view of it raises
    BufferError). ``decode`` is any bytes-to-sample function (a Pillow or
    torchvision decoder, ...); the file's slot is freed as soon as it
    returns. With ``decode=None`` (the default) the bytes stay raw:
    ``transform`` itself gets the view, under the same rule, and without a
    transform the item is the file's ``bytes``.

    ``loader_options`` go to :class:`asyncload.Loader`: ``queue_depth``
    (default 64), ``max_file_size`` (64 MiB), ``n_workers`` (default:
    automatic, see the module's notes; if given, at least DataLoader
    ``num_workers + 1``), ``dispatch_n``, ``idle_iters``, ``direct``, ``root``.

    ``start=False`` defers the loader process to the first use in this
    process (an item, ``len()``, pickling, :meth:`start`). Start it before
    handing the dataset to ``fork`` DataLoader workers: a worker cannot start
    the shared loader for its siblings.

    A file that cannot be read raises :class:`asyncload.LoadError` (errno and
    filename set); through a DataLoader worker the main process gets the
    exception re-raised with the path in its message.
    """

    def __init__(self, paths: Iterable[PathArg], transform: Optional[Transform] = None, *,
                 decode: Optional[Decode] = None, start: bool = True,
                 **loader_options: Any) -> None:
        # Requests are made with these exact strings, and completed entries
        # report the string they were requested with, which matches them up.
        self._paths: List[str] = [os.fsdecode(os.fspath(p)) for p in paths]
        self.transform = transform
        self.decode = decode
        opts: Dict[str, Any] = {
            "queue_depth": DEFAULT_QUEUE_DEPTH,
            "max_file_size": DEFAULT_MAX_FILE_SIZE,
        }
        opts.update(loader_options)
        # automatic slots: any process takes any free one (see the module's notes)
        self._auto_slots = "n_workers" not in loader_options
        if self._auto_slots:
            opts["n_workers"] = auto_n_workers(opts["queue_depth"])
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
        loader = _running_loader(self, "asyncload.torch: the dataset's loader", "dataset")
        if loader is not None:
            return loader
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
        if self._reads_async and self._owner and os.getpid() == self._owner_pid:
            self.start()
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.close()

    @property
    def async_loader(self) -> Loader:
        """The running :class:`asyncload.Loader` (started if need be)."""
        return self.start()

    @property
    def loader(self) -> Any:
        """The same as :attr:`async_loader` (ImageFolder gives ``loader``
        torchvision's meaning instead)."""
        return self.start()

    # -- pickling (spawn / forkserver workers) ----------------------------

    def __getstate__(self) -> Dict[str, Any]:
        # The loader must run before its handle can travel; the copy attaches
        # to this same loader instead of making one. (A dataset that reads by
        # path, ImageFolder with a custom loader=, needs none.)
        if self._reads_async:
            self.start()
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

    # subclasses that read by path (no loader process) set this False
    _reads_async = True

    def _claim_any(self, loader: Loader, preferred: int) -> Worker:
        """Automatic slots: ``preferred`` if free, else the next free one."""
        n = loader.n_workers
        for k in range(n):
            worker = loader.get_worker_context((preferred + k) % n)
            try:
                worker.claim()
                return worker
            except OSError as e:
                if e.errno != errno.EBUSY:
                    raise
        raise RuntimeError(
            f"asyncload.torch: all {n} worker slots are held by live processes; more "
            f"DataLoader workers than that? pass n_workers=num_workers + 1 (at most "
            f"{int(lib.ASYNCLOAD_MAX_ENTRIES) // loader.queue_depth} at queue_depth="
            f"{loader.queue_depth})")

    def _claim(self) -> _Slot:
        slot = self._slot
        pid = os.getpid()
        if slot is not None and slot.pid == pid:
            return slot
        loader = self.start()
        info = _tud.get_worker_info()
        last = loader.n_workers - 1
        if self._auto_slots:
            slot = _Slot(self._claim_any(loader, last if info is None else info.id % (last + 1)))
            self._slot = slot
            return slot
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
        process's is slot ``n_workers - 1`` (with automatic slots, the next
        free one if that one is held)."""
        return self._claim().worker

    # -- items -------------------------------------------------------------

    @property
    def paths(self) -> List[str]:
        """The files, in index order."""
        return self._paths

    def __len__(self) -> int:
        return len(self._paths)

    def _make_item(self, sample: Any, index: int) -> Any:
        """The item for ``index`` from its sample (subclasses add targets)."""
        return sample

    def _read_entry(self, entry: Entry) -> Any:
        """What a completed entry becomes while it is held: ``decode(data)``,
        or with no decode the transform's result (or bytes); then the entry
        goes back."""
        if self.decode is not None:
            return _entry_item(entry, self.decode, "decode")
        if self.transform is not None:
            return _entry_item(entry, self.transform)
        return _entry_item(entry, bytes)

    def _finish(self, value: Any, index: int) -> Any:
        """The item from what _read_entry gave (the transform, when decoded)."""
        if self.decode is not None and self.transform is not None:
            value = self.transform(value)
        return self._make_item(value, index)

    def __getitem__(self, index: int) -> Any:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: Sequence[int]) -> List[Any]:
        """The items of a whole batch, in the order of ``indices``.

        Requests as many files as the queue has free entries, decodes each
        as it completes, and refills the queue, so reads overlap each other
        and decoding. Transforms of decoded samples run in index order, as
        soon as every earlier item of the batch is decoded. The first failure
        is raised once every request of the batch has completed (so none
        leaks into the next batch).
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
            ready: List[Any] = [_PENDING] * n  # read, not finished yet
            nxt = 0  # items before this one are finished
            # closing(): an interrupt (Ctrl-C, loader gone) still collects what
            # was asked for, so the next batch starts with an empty queue.
            with closing(fill(slot.worker, paths, who="asyncload.torch")) as entries:
                for entry in entries:
                    if failure is not None:
                        entry.release()
                        continue
                    try:
                        ready[entry.tag] = self._read_entry(entry)
                        while nxt < n and ready[nxt] is not _PENDING:
                            out[nxt] = self._finish(ready[nxt], idx[nxt])
                            ready[nxt] = None
                            nxt += 1
                    except Exception as e:
                        failure = e
            if failure is not None:
                raise failure
        return out

    def __repr__(self) -> str:
        state = "closed" if self._closed else (
            "not started" if self._loader is None else repr(self._loader))
        return f"<{type(self).__name__} {len(self._paths)} files, {state}>"


# FileStream (in _stream) and ImageFolder (in _imagefolder) build on this
# module: looked up on first use, so either module can be imported first
# (spawn workers unpickle them by their own module's name).
_IMAGEFOLDER_NAMES = ("IMG_EXTENSIONS", "ImageFolder", "decode_image", "default_loader",
                      "find_classes", "pil_loader")


def __getattr__(name: str) -> Any:
    if name == "FileStream":
        from ._stream import FileStream
        return FileStream
    if name in _IMAGEFOLDER_NAMES:
        from . import _imagefolder
        return getattr(_imagefolder, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
