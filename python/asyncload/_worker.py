"""Worker: one worker slot of a loader, as a Python object.

Owns claiming the slot (lazily, per process; dropped after fork), queuing
requests with their tags, and taking completions (try_get, wait_get,
wait_batch) in 100 ms slices with the GIL released so Ctrl-C works. The
queue-filling loop behind load() lives in _fill.py.
"""

from __future__ import annotations

import errno
import os
import threading
import time
from typing import TYPE_CHECKING, Any, Iterable, Iterator, List, Optional, Tuple

from . import _state
from ._entry import Entry, _has_derived_views
from ._fill import LoadRequest, fill
from ._lowlevel import PathArg, check_error, ffi, lib
from ._state import U32_MAX, U64_MAX, deadline_of, encode_request, int_arg, slice_ms

if TYPE_CHECKING:
    from ._loader import Loader

__all__ = ["Worker"]


class Worker:
    """One worker slot of a loader: request files, get completed entries.

    Obtained from :meth:`Loader.get_worker_context`. The slot is claimed
    lazily by the first process that uses it, so the object can be created
    in the parent and handed to a child (through fork, or pickled to a
    spawn/forkserver child). Safe to use from several threads of one
    process.
    """

    # what completions are handed out as (AsyncLoader's subclass returns bytes paths)
    _entry_type = Entry

    def __init__(self, loader: "Loader", id: int) -> None:
        self._loader = loader
        self._id = id
        self._ptr: Any = None
        self._lock = threading.Lock()
        # Bumped whenever the C handle goes away, so entries obtained through
        # an old handle are never handed back through a new one.
        self._gen = 0
        # data views of entries dropped while views derived from them lived
        self._kept_views: List[memoryview] = []
        _state.all_workers.add(self)

    # -- claiming ---------------------------------------------------------

    def _handle(self) -> Any:
        ptr = self._ptr
        if ptr is not None:
            return ptr
        with self._lock:
            if self._ptr is None:
                lptr = self._loader._live()
                out = ffi.new("asyncload_worker **")
                rc = lib.asyncload_worker_get(lptr, self._id, out)
                if rc == -errno.EBUSY:
                    raise OSError(errno.EBUSY,
                                  f"worker slot {self._id} is held by another live process")
                check_error(rc)
                self._ptr = out[0]
                self._loader._c.workers.add(self._ptr)
            return self._ptr

    def claim(self) -> None:
        """Claim the slot for this process now rather than at the first request.

        Idempotent. OSError(EBUSY) while another live process holds it; a
        slot whose holder died is taken over (with its whole queue).
        """
        self._handle()

    def _forget_after_fork(self) -> None:
        self._kept_views = []
        self._lock = threading.Lock()
        self._ptr = None
        self._gen += 1

    def close(self) -> None:
        """Release the entries this worker still holds and give the slot back
        (this process, or another, may claim it again later).

        The next claim of the slot reuses every entry, so close() first
        releases each entry of this worker that this process holds, as
        :meth:`Entry.release` does (their ``data`` views are invalidated).
        While views derived from an entry's data (slices, casts, numpy
        arrays ...) are alive, close() raises BufferError and keeps the slot
        claimed, so bytes never change under a live view; drop or copy them
        and call close() again.
        """
        with self._lock:
            ptr = self._ptr
            c = self._loader._c
            if ptr is not None and c.alive:
                self._release_held()
            self._ptr = None
            self._gen += 1
            if ptr is not None and c.alive and ptr in c.workers:
                c.workers.discard(ptr)
                lib.asyncload_worker_free(ptr)

    def _release_held(self) -> None:
        """Releases this process's entries of this worker; BufferError if a
        view derived from one of them (or from a dropped one) lives."""
        busy = []
        for e in list(self._loader._entries):
            if e._worker is self and e._gen == self._gen and e._pid == _state.pid and not e._released:
                try:
                    e.release()
                except BufferError:
                    busy.append(e._path)
        kept = []
        for v in self._kept_views:
            try:
                if _has_derived_views(v):
                    raise BufferError
                v.release()
            except BufferError:
                kept.append(v)
                busy.append("a dropped entry")
        self._kept_views = kept
        if busy:
            more = f" (and {len(busy) - 1} more)" if len(busy) > 1 else ""
            raise BufferError(
                f"views derived from the data of {busy[0]!r}{more} are still alive; "
                "drop them (or copy the bytes) before closing the worker")

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    # -- properties -------------------------------------------------------

    @property
    def id(self) -> int:
        return self._id

    @property
    def loader(self) -> "Loader":
        return self._loader

    @property
    def in_flight(self) -> int:
        """Requests queued or being read, not yet returned by a get."""
        return int(lib.asyncload_worker_in_flight(self._handle()))

    # -- requests ---------------------------------------------------------

    def request(self, path: Optional[PathArg] = None, offset: int = 0,
                length: Optional[int] = None, tag: int = 0, *,
                filepath: Optional[PathArg] = None) -> bool:
        """Queue a load of ``path`` (or ``length`` bytes at ``offset``).

        ``tag``, an integer in [0, 2**64-1], comes back untouched as the
        entry's :attr:`Entry.tag`: it tells apart requests for the same path.
        Returns False when every entry of this worker is taken (release one
        and retry). Raises LoaderClosedError if the loader stopped,
        TypeError/ValueError for a bad path, range or tag. The outcome of the
        load itself (missing file, ...) arrives with the entry. ``filepath``
        is the prototype's name for ``path``.
        """
        if filepath is not None:
            if path is not None:
                raise TypeError("give either path or filepath, not both")
            path = filepath
        if path is None:
            raise TypeError("request() needs a path")
        raw, off, n = encode_request(path, offset, length)
        t = int_arg("tag", tag, U64_MAX)
        rc = lib.asyncload_worker_submit(self._handle(), raw, off, n, t)
        if rc == -errno.EAGAIN:
            return False
        check_error(rc, os.fsdecode(raw))
        return True

    def try_get(self) -> Optional[Entry]:
        """A completed entry, or None if none is ready.

        Raises LoaderClosedError once the loader stopped and nothing is left.
        """
        out = ffi.new("asyncload_entry **")
        rc = lib.asyncload_worker_try_get(self._handle(), out)
        if rc == -errno.EAGAIN:
            return None
        check_error(rc)
        return self._entry_type(self, out[0])

    def _wait_into(self, out: Any, max: int, timeout: Optional[float]) -> int:
        """Sleep until entries complete, put up to ``max`` of them in ``out``
        (a cffi ``asyncload_entry *[]``) and return how many.

        The C wait is cut into slices: looping back between them lets the
        interpreter run pending signal handlers (KeyboardInterrupt).
        """
        deadline = deadline_of(timeout)
        w = self._handle()
        while True:
            rc = lib.asyncload_worker_wait_batch(w, out, max, slice_ms(deadline))
            if rc > 0:
                return rc
            if rc == -errno.ETIMEDOUT:
                if deadline is not None and time.monotonic() >= deadline:
                    raise TimeoutError(errno.ETIMEDOUT,
                                       f"no entry completed within {timeout} s")
            elif rc != -errno.EINTR:
                check_error(rc)

    def wait_get(self, timeout: Optional[float] = None) -> Entry:
        """Sleep until an entry completes and return it.

        ``timeout`` in seconds (None: forever) raises TimeoutError when it
        passes. The GIL is released while sleeping and Ctrl-C interrupts the
        wait (KeyboardInterrupt). Raises LoaderClosedError within about a
        second if the loader is shut down or dies.
        """
        out = ffi.new("asyncload_entry *[1]")
        self._wait_into(out, 1, timeout)
        return self._entry_type(self, out[0])

    def wait_batch(self, max: Optional[int] = None,
                   timeout: Optional[float] = None) -> List[Entry]:
        """Sleep until at least one entry completes; return up to ``max`` of them.

        One wake-up per burst instead of one per file. ``max`` defaults to
        the queue depth. Waits as :meth:`wait_get` does: ``timeout`` raises
        TimeoutError, Ctrl-C works, LoaderClosedError within about a second
        once the loader is gone. The caller owns (must release) every entry.
        """
        n = self._loader.queue_depth if max is None else int_arg("max", max, U32_MAX, 1)
        out = ffi.new("asyncload_entry *[]", n)
        got = self._wait_into(out, n, timeout)
        return [self._entry_type(self, out[i]) for i in range(got)]

    def load(self, items: Iterable[LoadRequest], *,
             timeout: Optional[float] = None) -> Iterator[Entry]:
        """Load many files, keeping the queue full; yield entries as they complete.

        Items are paths, or ``(path, offset, length)`` tuples for ranges.
        Each entry's :attr:`Entry.tag` is its item's index in ``items`` (0,
        1, 2, ...); entries come in completion order, not request order.
        **The caller owns every yielded entry and must release it** (``with
        entry:``); entries still held limit how many loads can be in flight,
        and if the caller holds all of them, load() raises RuntimeError
        instead of waiting forever. Failed loads are yielded too (check
        ``entry.error`` or let ``get_data()`` raise). If the iteration stops
        early, the loads it already queued are waited for and released, so
        they never surface in later gets. Assumes no other thread uses this
        worker meanwhile.
        """
        return fill(self, items, timeout=timeout)

    # -- pickling ---------------------------------------------------------

    def __reduce__(self) -> Tuple[Any, Tuple[str, int]]:
        from ._loader import _rebuild_worker
        return (_rebuild_worker, (self._loader.handle, self._id))

    def __repr__(self) -> str:
        claimed = "claimed" if self._ptr is not None else "unclaimed"
        return f"<asyncload.Worker id={self._id} {claimed} loader={self._loader.handle!r}>"
