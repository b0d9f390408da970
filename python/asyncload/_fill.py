"""The one queue-filling loop: keep a worker's queue full, yield completions as they come.

Owns ``fill()``, behind ``Worker.load()`` and used by asyncload.torch, the
CLI and the tools: request items until the queue is full (EAGAIN), take
completions in bursts with wait_batch, yield them in completion order, and
refill once half the queue has drained. Each request's tag is its item's
index, so a caller matches an entry to its item by ``entry.tag`` even when
several items name the same path.
"""

from __future__ import annotations

import errno
import os
from typing import TYPE_CHECKING, Iterable, Iterator, List, Optional, Set, Tuple, Union

from ._entry import Entry
from ._lowlevel import PathArg, check_error, ffi, lib
from ._state import encode_request

if TYPE_CHECKING:
    from ._worker import Worker

__all__ = ["LoadRequest", "fill"]

# One item for Worker.load(): a path, or (path, offset, length).
LoadRequest = Union[PathArg, Tuple[PathArg, int, Optional[int]]]


def _encode_item(item: LoadRequest) -> Tuple[bytes, int, int]:
    if isinstance(item, tuple):
        path, offset, length = item
        return encode_request(path, offset, length)
    return encode_request(item)


def fill(worker: "Worker", items: Iterable[LoadRequest], *, timeout: Optional[float] = None,
         who: str = "Worker.load()") -> Iterator[Entry]:
    """Load ``items`` through ``worker``; yield each entry (tag = item index) as it completes.

    The caller owns the yielded entries. ``timeout`` bounds each wait
    (TimeoutError). Raises RuntimeError, naming ``who``, when every entry is
    held by the caller and none is in flight. Closing the generator early
    waits for and releases what it had queued. An entry whose tag was not
    asked for here (left in the slot by a dead previous holder) is released
    and skipped.
    """
    it = iter(items)
    depth = worker.loader.queue_depth
    # Refill in bursts once half the queue has drained, not one request per
    # completion: the loader then wakes once per burst and answers it in one
    # batch, instead of the two processes taking turns per file.
    low_water = depth // 2
    wptr = worker._handle()
    submit = lib.asyncload_worker_submit
    out = ffi.new("asyncload_entry *[]", depth)
    waiting: Set[int] = set()  # tags queued and not answered yet
    index = 0
    pending: Optional[Tuple[bytes, int, int]] = None  # encoded, not yet queued
    exhausted = False
    batch: List[Optional[Entry]] = []
    try:
        while True:
            if len(waiting) <= low_water:
                while not exhausted:
                    if pending is None:
                        try:
                            item = next(it)
                        except StopIteration:
                            exhausted = True
                            break
                        pending = _encode_item(item)
                    raw, off, n = pending
                    rc = submit(wptr, raw, off, n, index)
                    if rc < 0:
                        if rc == -errno.EAGAIN:
                            break
                        check_error(rc, os.fsdecode(raw))
                    pending = None
                    waiting.add(index)
                    index += 1
            if not waiting:
                if exhausted:
                    return
                raise RuntimeError(
                    f"{who}: no free entry and none in flight; release the entries it "
                    "yields (e.g. `with entry:`) before taking more")
            got = worker._wait_into(out, min(len(waiting), depth), timeout)
            batch = [worker._entry_type(worker, out[i]) for i in range(got)]
            for k, entry in enumerate(batch):
                batch[k] = None  # from here on the caller (or the release below) owns it
                if entry.tag in waiting:
                    waiting.remove(entry.tag)
                    yield entry
                else:
                    entry.release()
    finally:
        # Stopped early: entries taken but not handed out, then the loads
        # still in flight, go back so they never surface in later gets.
        for entry in batch:
            if entry is not None:
                waiting.discard(entry.tag)
                entry.release()
        while waiting:
            try:
                got = worker._wait_into(out, min(len(waiting), depth), timeout)
            except OSError:  # LoaderClosedError, TimeoutError: nothing more will come
                break
            for i in range(got):
                entry = worker._entry_type(worker, out[i])
                waiting.discard(entry.tag)
                entry.release()
