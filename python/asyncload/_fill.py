"""The one queue-filling loop: keep a worker's queue full, yield completions as they come.

Owns ``fill()``, behind ``Worker.load()`` and used by asyncload.torch, the
CLI and the tools: request items until the queue is full (EAGAIN), take
completions in bursts with wait_batch, yield them in completion order, and
refill in bursts: once an eighth of the queue has drained while loads wait on
storage, once half of the small window has while they are answered inline.
Each request's tag is its item's index, so a caller matches an entry to its
item by ``entry.tag`` even when several items name the same path.
"""

from __future__ import annotations

import errno
import os
import sys
from typing import TYPE_CHECKING, Any, Dict, Iterable, Iterator, Optional, Tuple, Union

from ._entry import Entry
from ._lowlevel import PathArg, check_error, ffi, lib
from ._state import WHOLE_FILE, encode_request

if TYPE_CHECKING:
    from ._worker import Worker

__all__ = ["FIELDS", "LoadRequest", "Window", "drain", "encode_item", "fill", "give_back"]

# One item for Worker.load(): a path, or (path, offset, length).
LoadRequest = Union[PathArg, Tuple[PathArg, int, Optional[int]]]


# loads kept in flight while the loader answers from the page cache (see fill)
WARM_WINDOW = 16

# numbers al_py_entry_fields gives per entry: size, offset, tag, -error, answered inline
FIELDS = lib.AL_PY_FIELDS

_FS_ENCODING = sys.getfilesystemencoding()
_FS_ERRORS = sys.getfilesystemencodeerrors()


class Window:
    """How many loads a queue-filling loop keeps in flight (``size``) and when
    it refills (once no more than ``low`` are in flight); fill() and
    FileStream's read loop share it.

    Loads that wait on storage get the whole queue, refilled after an eighth
    has drained, so the latency stays hidden behind a nearly full queue. Loads
    the loader answers inline (from the page cache or its own cache: the
    entry's inline_answer) have no latency to hide, and a full queue would
    only cycle more buffers than the CPU caches hold (the loader's copy into
    a buffer not in its cache costs it 30-40 % more): after a queue's worth
    of inline answers in a row the window is WARM_WINDOW, refilled in bursts
    of half of it (one loader wake-up a burst), until the first load that
    was not answered inline.
    """

    __slots__ = ("depth", "size", "low", "hits")

    def __init__(self, depth: int) -> None:
        self.depth = depth
        self.hits = 0
        self._storage()

    def _storage(self) -> None:
        self.size = self.depth
        self.low = self.depth - max(1, self.depth // 8)

    def saw(self, inline_answer: int, error: int) -> None:
        """One completion: answered inline or not (an error says nothing)."""
        if inline_answer:
            self.hits += 1
            if self.hits == self.depth:
                self.size = min(self.depth, WARM_WINDOW)
                self.low = self.size // 2
        elif not error and self.hits:
            self.hits = 0
            self._storage()


def encode_item(item: LoadRequest) -> Tuple[bytes, int, int, str]:
    """(path bytes, offset, length, the path as Entry.path gives it), checked; a
    plain str path (the common case, once per file) without encode_request's type
    dispatch."""
    if type(item) is str and item and "\0" not in item:
        return item.encode(_FS_ENCODING, _FS_ERRORS), 0, WHOLE_FILE, item
    if isinstance(item, tuple):
        path, offset, length = item
        raw, off, n = encode_request(path, offset, length)
    else:
        raw, off, n = encode_request(item)
    return raw, off, n, os.fsdecode(raw)


def give_back(out: Any, fbuf: Any, start: int, got: int, tags: Dict[int, Any]) -> None:
    """Release the entries out[start:got] (their fields in fbuf, al_py_entry_fields')
    and forget their tags: loads nobody will take."""
    release = lib.asyncload_entry_release
    for k in range(start, got):
        tags.pop(fbuf[FIELDS * k + 2], None)
        release(out[k])


def drain(worker: "Worker", tags: Dict[int, Any], timeout: Optional[float] = None) -> None:
    """Wait for the loads whose tags are the keys of ``tags`` and release them, so they
    never surface in later gets; stops once the loader is gone or ``timeout`` passes."""
    depth = worker.loader.queue_depth
    out = ffi.new("asyncload_entry *[]", depth)
    fbuf = ffi.new("uint64_t[]", FIELDS * depth)
    while tags:
        try:
            got = worker._wait_into(out, min(len(tags), depth), timeout)
        except OSError:  # LoaderClosedError, TimeoutError: nothing more will come
            return
        lib.al_py_entry_fields(out, got, fbuf)
        give_back(out, fbuf, 0, got, tags)


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
    window = Window(depth)
    wptr = worker._handle()
    submit = lib.asyncload_worker_submit
    release = lib.asyncload_entry_release
    fields = lib.al_py_entry_fields
    make = worker._entry_type._from_fields
    out = ffi.new("asyncload_entry *[]", depth)
    fbuf = ffi.new("uint64_t[]", FIELDS * depth)
    # tags queued and not answered yet -> the path each entry reports, known
    # here already, so no entry decodes its path from shared memory
    waiting: Dict[int, str] = {}
    index = 0
    pending: Optional[Tuple[bytes, int, int, str]] = None  # encoded, not yet queued
    exhausted = False
    got = handed = 0  # entries of the current batch, and how many were yielded
    try:
        while True:
            # Refill in bursts, not one request per completion: the loader
            # then wakes once per burst and answers it in one batch.
            if len(waiting) <= window.low:
                while not exhausted and len(waiting) < window.size:
                    if pending is None:
                        try:
                            item = next(it)
                        except StopIteration:
                            exhausted = True
                            break
                        pending = encode_item(item)
                    raw, off, n, path = pending
                    rc = submit(wptr, raw, off, n, index)
                    if rc < 0:
                        if rc == -errno.EAGAIN:
                            break
                        check_error(rc, path)
                    pending = None
                    waiting[index] = path
                    index += 1
            if not waiting:
                if exhausted:
                    return
                raise RuntimeError(
                    f"{who}: no free entry and none in flight; release the entries it "
                    "yields (e.g. `with entry:`) before taking more")
            got = handed = 0
            got = worker._wait_into(out, min(len(waiting), depth), timeout)
            fields(out, got, fbuf)
            f = ffi.unpack(fbuf, FIELDS * got)
            while handed < got:
                k = FIELDS * handed
                window.saw(f[k + 4], f[k + 3])
                tag = f[k + 2]
                path = waiting.pop(tag, None)
                if path is None:
                    release(out[handed])
                    handed += 1
                    continue
                entry = make(worker, out[handed], path, f[k], f[k + 1], tag, f[k + 3])
                handed += 1  # from here on the caller owns it
                yield entry
    finally:
        # Stopped early: entries taken but not handed out, then the loads
        # still in flight, go back so they never surface in later gets.
        give_back(out, fbuf, handed, got, waiting)
        drain(worker, waiting, timeout)
