"""FileStream: an IterableDataset that keeps the asyncload queue full for a whole epoch.

Why it exists: a map-style ``FileDataset`` sees one batch of indices at a
time, so each DataLoader worker's queue drains at every batch boundary and the
storage idles while the batch is collated. A stream knows its whole epoch's
order up front, so each worker keeps requesting ahead while it yields, from
the first sample to the last, and starts the next epoch's first reads before
the current epoch ends.

Layout of the work (see ``FileStream``'s docstring for the user's view):

* Order: ``_shard`` (epoch order, rank and worker shares, resume progress).
* One loader per node: ``_nodeloader`` (the handle file, the attach).
  Slots: local rank ``l`` owns ``per_rank`` consecutive slots, DataLoader
  worker ``k`` the ``k``-th, the main process the last.
* Reading: ``_readahead`` (the loop that keeps the queue full, the tags).

This file owns FileStream itself: its options, lifecycle, pickling into
DataLoader workers, epochs, ``state_dict``, slot claim and sample making.
"""

from __future__ import annotations

import multiprocessing as _mp
import multiprocessing.context as _mpctx
import os
import random
import threading
import weakref
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import torch.utils.data as _tud

from ._entry import Entry
from ._loader import Loader
from ._lowlevel import PathArg
from ._nodeloader import (_ATTACH_TIMEOUT_S, _attach_published, _publish, _stop_stream,
                          next_handle_file)
from ._readahead import _SKIPPED, _Carry, run
from ._shard import _Progress, _rank_len, dist_info, shard_indices
from ._worker import Worker
from .torch import (DEFAULT_MAX_FILE_SIZE, DEFAULT_QUEUE_DEPTH, _claim_slot, _entry_item,
                    _running_loader, default_n_workers)

__all__ = ["FileStream"]


class FileStream(_tud.IterableDataset):
    """An IterableDataset over files that never lets the read queue drain.

    ``FileStream(paths, transform=None, *, targets=None, shuffle=True, seed=0,
    drop_last=False, ordered=False, on_error="raise", num_workers=None,
    start=True, decode=None, **loader_options)``

    Each sample is ``transform(data)`` (``data``: a read-only view of the
    file's bytes, valid during the call) or the file's ``bytes``; with
    ``decode`` (a bytes-to-sample function, as on FileDataset and ImageFolder)
    it is ``transform(decode(data))``; with
    ``targets`` (one per path) it is ``(sample, targets[i])``.

    * **Order and sharding**: epoch ``e``'s order is the permutation of
      ``seed + e`` (``shuffle=False``: index order), the same on every rank;
      each rank takes its share exactly as ``DistributedSampler`` does
      (padded by repeating, or cut with ``drop_last``), each DataLoader
      worker every ``num_workers``-th sample of that. Every sample once per
      epoch across ranks and workers. Rank and world size: see
      :func:`dist_info`; read when the stream is made.
    * **Never drains**: each worker requests ahead while it yields, across
      batch boundaries; once its share is all requested it requests the first
      samples of the next epoch (epoch + 1, or the same epoch if this process
      saw it repeat), which the next iteration in this process (persistent
      workers, ``num_workers=0``) takes over. Samples come in completion
      order; ``ordered=True`` yields each worker's share in order.
    * **Epochs**: ``set_epoch(n)`` before iterating (as with
      ``DistributedSampler``); it reaches persistent workers too.
    * **One loader per node**: local rank 0 starts the loader process and
      publishes its handle in a file under ``$ASYNCLOAD_RUN_DIR`` (default
      ``$TMPDIR/asyncload-$UID``), in a directory keyed by
      ``TORCHELASTIC_RUN_ID`` or ``MASTER_ADDR:MASTER_PORT`` and the host;
      the other local ranks attach to it. Build the FileStreams in the same
      order on every rank. The loader stops when local rank 0's stream is
      closed or its process exits: keep rank 0 alive (a barrier) until the
      other ranks are done.
    * **Slots**: ``num_workers`` (the DataLoader's, if known) gives each
      local rank ``num_workers + 1`` slots; by default each gets
      :func:`default_n_workers`. ``n_workers`` in ``loader_options`` is the
      node's total and overrides this.
    * ``len()``: this rank's samples per epoch. ``state_dict()`` /
      ``load_state_dict()``: which samples of the current epoch this worker
      has handed out, so ``torchdata``'s ``StatefulDataLoader`` resumes
      mid-epoch without repeats or gaps.
    * **Errors**: a file that cannot be read raises
      :class:`asyncload.LoadError` (errno, filename) in the worker;
      ``on_error="skip"`` drops the sample and counts it in :attr:`skipped`.
    """

    def __init__(self, paths: Sequence[PathArg], transform: Optional[Callable[[memoryview], Any]] = None,
                 *, targets: Optional[Sequence[Any]] = None, shuffle: bool = True, seed: int = 0,
                 drop_last: bool = False, ordered: bool = False, on_error: str = "raise",
                 num_workers: Optional[int] = None, start: bool = True,
                 decode: Optional[Callable[[memoryview], Any]] = None,
                 **loader_options: Any) -> None:
        self._paths: List[str] = [os.fsdecode(os.fspath(p)) for p in paths]
        if targets is not None:
            targets = list(targets)
            if len(targets) != len(self._paths):
                raise ValueError(f"targets has {len(targets)} entries for {len(self._paths)} paths")
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', not {on_error!r}")
        if num_workers is not None and num_workers < 0:
            raise ValueError("num_workers must be >= 0")
        self.targets: Optional[List[Any]] = targets
        self.transform = transform
        self.decode = decode
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.drop_last = bool(drop_last)
        self.ordered = bool(ordered)
        self.on_error = on_error
        self.rank, self.world_size, self.local_rank, self.local_world_size = dist_info()
        self.per_rank_slots = default_n_workers() if num_workers is None else num_workers + 1
        opts: Dict[str, Any] = {
            "queue_depth": DEFAULT_QUEUE_DEPTH,
            "max_file_size": DEFAULT_MAX_FILE_SIZE,
            "n_workers": self.local_world_size * self.per_rank_slots,
        }
        opts.update(loader_options)
        if opts["n_workers"] < self.local_world_size:
            raise ValueError("n_workers must give each local rank at least one slot")
        self.per_rank_slots = opts["n_workers"] // self.local_world_size
        self._options = opts
        # [epoch, skipped by slot 0, by slot 1, ...], shared with DataLoader
        # workers (inherited or sent at their start) so set_epoch() reaches
        # persistent workers; one counter per slot, so no two processes
        # write the same word.
        self._shared: Any = _mp.Array("q", 1 + self.per_rank_slots, lock=False)
        self._loader: Optional[Loader] = None
        self._owner_pid = os.getpid()
        self._owner = True
        self._closed = False
        self._handle_file: Optional[str] = None
        if self.local_world_size > 1:
            self._handle_file = next_handle_file()
        self._finalizer: Optional[weakref.finalize] = None
        self._start_lock = threading.Lock()
        self._init_process_state()
        if start:
            self.start()

    def _init_process_state(self) -> None:
        """What belongs to one process, never copied to another."""
        self._worker: Optional[Worker] = None
        self._worker_pid = -1
        self._slot_index = 0
        self._nonce = random.getrandbits(16)
        self._progress: Optional[_Progress] = None
        self._resume: Optional[Dict[str, Any]] = None
        self._carry: Optional[_Carry] = None
        self._last_epoch: Optional[int] = None
        self._adopted = 0  # iterations that took over the previous one's next-epoch reads
        self._iter_lock = threading.Lock()

    # -- lifecycle --------------------------------------------------------

    def start(self) -> Loader:
        """Start (local rank 0) or attach to (other local ranks) the node's
        loader if not done yet; returns it."""
        loader = _running_loader(self, "asyncload.torch.FileStream: the loader", "stream")
        if loader is not None:
            return loader
        with self._start_lock:
            if self._loader is None:
                if self.local_rank > 0:
                    assert self._handle_file is not None
                    loader = _attach_published(self._handle_file, _ATTACH_TIMEOUT_S)
                    if loader.n_workers < self.local_world_size * self.per_rank_slots:
                        loader.close()
                        raise ValueError(
                            f"the node's loader has {loader.n_workers} slots; this rank "
                            f"needs {self.local_world_size * self.per_rank_slots}: build "
                            "the FileStream with the same options on every rank")
                    self._finalizer = weakref.finalize(self, loader.close)
                else:
                    loader = Loader(**self._options)
                    try:
                        loader.spawn_loader()
                        if self._handle_file is not None:
                            _publish(self._handle_file, loader.handle)
                    except BaseException:
                        loader.close()
                        raise
                    self._finalizer = weakref.finalize(
                        self, _stop_stream, loader, os.getpid(), self._handle_file)
                self._loader = loader
            assert self._loader is not None
            return self._loader

    def close(self) -> None:
        """Stop the loader (local rank 0's creating process) or detach (others)."""
        self._closed = True
        self._worker = None
        self._carry = None
        fin, self._finalizer = self._finalizer, None
        self._loader = None
        if fin is not None:
            fin()

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> "FileStream":
        if self._owner and os.getpid() == self._owner_pid:
            self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @property
    def loader(self) -> Loader:
        return self.start()  # the running loader, started here if need be

    def __getstate__(self) -> Dict[str, Any]:
        self.loader  # noqa: B018  the handle must exist before it travels
        state = self.__dict__.copy()
        for k in ("_worker", "_worker_pid", "_nonce", "_progress", "_carry", "_last_epoch",
                  "_adopted", "_iter_lock", "_start_lock", "_finalizer"):
            state.pop(k, None)
        state["_owner"] = False
        if _mpctx.get_spawning_popen() is None:
            # not a process start (pickle.dumps, deepcopy): a snapshot
            state["_shared"] = list(self._shared)
        return state

    def __setstate__(self, state: Dict[str, Any]) -> None:
        resume = state.pop("_resume", None)
        self.__dict__.update(state)
        if isinstance(self._shared, list):
            self._shared = _mp.Array("q", self._shared, lock=False)
        self._start_lock = threading.Lock()
        self._finalizer = None
        self._init_process_state()
        self._resume = resume

    # -- epochs, sizes, state ----------------------------------------------

    @property
    def paths(self) -> List[str]:
        return self._paths

    @property
    def epoch(self) -> int:
        return int(self._shared[0])

    def set_epoch(self, epoch: int) -> None:
        """The epoch the next iteration runs (its order is ``seed + epoch``'s)."""
        self._shared[0] = int(epoch)

    @property
    def skipped(self) -> int:
        """Samples dropped by ``on_error="skip"`` so far, over all workers."""
        return int(sum(self._shared[1:]))

    def __len__(self) -> int:
        return _rank_len(len(self._paths), self.world_size, self.drop_last)

    def indices(self, epoch: Optional[int] = None, worker: int = 0, num_workers: int = 1,
                rank: Optional[int] = None) -> List[int]:
        """The sample indices one worker of one rank reads in ``epoch``."""
        return shard_indices(len(self._paths), self.epoch if epoch is None else epoch,
                             seed=self.seed, shuffle=self.shuffle, drop_last=self.drop_last,
                             rank=self.rank if rank is None else rank,
                             world_size=self.world_size, worker=worker, num_workers=num_workers)

    def state_dict(self) -> Dict[str, Any]:
        """This worker's progress in the current epoch (StatefulDataLoader
        calls it in each worker after each batch)."""
        p = self._progress
        if p is None:
            return {"epoch": self.epoch, "progress": None}
        return {"epoch": p.epoch, "progress": {
            "seed": self.seed, "shuffle": self.shuffle, "drop_last": self.drop_last,
            "rank": self.rank, "world_size": self.world_size, "n": len(self._paths),
            "worker": p.worker, "num_workers": p.num_workers, "size": p.size,
            "done_below": p.low, "done_above": sorted(p.extra)}}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Make the next iteration in this process resume from ``state``."""
        if "epoch" not in state:
            raise ValueError("not a FileStream state_dict")
        self._resume = dict(state)

    # -- iteration ---------------------------------------------------------

    def _claim(self) -> Worker:
        if self._worker is not None and self._worker_pid == os.getpid():
            return self._worker
        loader = self.loader
        info = _tud.get_worker_info()
        base = self.local_rank * self.per_rank_slots
        if info is None:
            k, who = self.per_rank_slots - 1, "the main process"
        else:
            if info.num_workers > self.per_rank_slots - 1:
                raise ValueError(
                    f"asyncload.torch.FileStream: DataLoader num_workers={info.num_workers} "
                    f"needs {info.num_workers + 1} slots per local rank; this stream has "
                    f"{self.per_rank_slots} (pass num_workers={info.num_workers})")
            k, who = info.id, f"DataLoader worker {info.id}"
        self._worker = _claim_slot(loader, base + k, f"{who} of local rank {self.local_rank}")
        self._slot_index = k
        self._worker_pid = os.getpid()
        self._nonce = random.getrandbits(16)
        self._carry = None  # in flight in the parent's slot, not this one
        return self._worker

    def _make_item(self, data: memoryview, index: int) -> Any:
        if self.decode is not None:
            sample = self.decode(data)
            if self.transform is not None:
                sample = self.transform(sample)
        else:
            sample = bytes(data) if self.transform is None else self.transform(data)
        if self.targets is None:
            return sample
        return sample, self.targets[index]

    def __iter__(self) -> Iterator[Any]:
        return self._generate()

    def _generate(self) -> Iterator[Any]:
        if not self._iter_lock.acquire(blocking=False):
            raise RuntimeError("asyncload.torch.FileStream: one iteration at a time per process")
        try:
            yield from run(self)
        finally:
            self._iter_lock.release()

    def _plan(self) -> Tuple[int, int, int, List[int], _Progress]:
        info = _tud.get_worker_info()
        wid, nw = (info.id, info.num_workers) if info is not None else (0, 1)
        resume, self._resume = self._resume, None
        epoch = self.epoch if resume is None else int(resume["epoch"])
        share = self.indices(epoch, wid, nw)
        prog = _Progress(epoch, wid, nw, len(share))
        pr = resume.get("progress") if resume is not None else None
        if pr is not None:
            mine = {"seed": self.seed, "shuffle": self.shuffle, "drop_last": self.drop_last,
                    "rank": self.rank, "world_size": self.world_size, "n": len(self._paths),
                    "worker": wid, "num_workers": nw, "size": len(share)}
            diff = [k for k, v in mine.items() if pr.get(k) != v]
            if diff:
                raise ValueError(f"FileStream state_dict does not fit this stream/worker: "
                                 f"{', '.join(f'{k}={pr.get(k)!r} (here {mine[k]!r})' for k in diff)}")
            prog.low = int(pr["done_below"])
            prog.extra = set(int(p) for p in pr["done_above"])
        return epoch, wid, nw, share, prog


    def _convert(self, entry: Entry, index: int) -> Any:
        """The sample of a completed entry; a failed load raises, or with
        on_error="skip" counts and gives _SKIPPED."""
        if entry.error and self.on_error == "skip":
            entry.release()
            self._shared[1 + self._slot_index] += 1
            return _SKIPPED
        return _entry_item(entry, lambda data: self._make_item(data, index))

    def __repr__(self) -> str:
        state = "closed" if self._closed else (
            "not started" if self._loader is None else repr(self._loader))
        return (f"<FileStream {len(self._paths)} files, rank {self.rank}/{self.world_size}, "
                f"epoch {self.epoch}, {state}>")
