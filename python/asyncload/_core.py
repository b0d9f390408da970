"""The Python classes of asyncload: Loader, Worker and Entry.

They wrap the opaque C handles of libasyncload (see asyncload.h) and add what
Python code expects: exceptions instead of negative errnos, pickling (so a
Worker reaches spawn/forkserver children), lazy per-process worker claims,
memory-safe zero-copy views, and waits that Ctrl-C can interrupt.

Lifetime rules, chosen so that Python code can never touch unmapped or
reused shared memory:
  Entry -> Worker -> Loader hold strong references (an entry keeps its
  mapping alive); Loader -> Worker/Entry references are weak, so there is no
  reference cycle and objects die in a deterministic order.
"""

from __future__ import annotations

import errno
import gc
import math
import numbers
import os
import sys
import threading
import time
import weakref
from typing import Any, Dict, Iterable, Iterator, List, Optional, Tuple, Union

from ._lowlevel import (
    LoadError,
    LoaderClosedError,
    PathArg,
    check_error,
    encode_path,
    ffi,
    lib,
    strerror,
)

__all__ = ["Loader", "Worker", "Entry", "LoadRequest"]

# Longest single sleep inside the C library. The waits are cut into slices
# this long so that the interpreter gets back control regularly and can run
# a pending SIGINT handler even when the signal went to another thread.
_WAIT_SLICE_MS = 100

_NOT_REGULAR = "Not a regular file (FIFO, socket or device)"
_FS_ENCODING = sys.getfilesystemencoding()
_FS_ERRORS = sys.getfilesystemencodeerrors()

_U32_MAX = 0xFFFF_FFFF
_U64_MAX = 0xFFFF_FFFF_FFFF_FFFF

# One item for Worker.load(): a path, or (path, offset, length).
LoadRequest = Union[PathArg, Tuple[PathArg, int, Optional[int]]]

# ---------------------------------------------------------------- process state

# getpid() is a real system call on current glibc; entries compare against
# this copy instead, kept right by the at-fork hook below.
_pid = os.getpid()

# All live objects whose per-process state must be dropped in a forked child.
_all_workers: "weakref.WeakSet[Worker]" = weakref.WeakSet()
_all_loaders: "weakref.WeakSet[Loader]" = weakref.WeakSet()

# handle string -> Loader usable in this process (created here, inherited
# through fork, or attached). Weak: it must not keep a creator's loader alive.
_by_handle: "weakref.WeakValueDictionary[str, Loader]" = weakref.WeakValueDictionary()
# Attachments made while unpickling: kept alive so that every unpickled
# Worker/Loader of one handle shares a single mapping per process.
_attached: Dict[str, "Loader"] = {}
_registry_lock = threading.RLock()
# Guards the released flag of entries, so two threads releasing the same
# entry cannot hand it back to the loader twice. Reentrant because a garbage
# collection inside a release (allocations can trigger one) may run
# Entry.__del__ -> release() of another entry on the same thread.
_entry_lock = threading.RLock()


def _after_fork_in_child() -> None:
    """Forget per-process state inherited from the parent.

    A worker slot belongs to the process that claimed it, so an inherited
    C worker handle must not be used (or freed: that would give the
    parent's slot away). Locks may have been held by a parent thread that
    does not exist here.
    """
    global _pid, _registry_lock, _entry_lock
    _pid = os.getpid()
    _registry_lock = threading.RLock()
    _entry_lock = threading.RLock()
    for w in list(_all_workers):
        w._forget_after_fork()
    for loader in list(_all_loaders):
        loader._lock = threading.RLock()
        loader._runs = []  # the threads running them did not survive fork


os.register_at_fork(after_in_child=_after_fork_in_child)


# ---------------------------------------------------------------- helpers


def _int_arg(name: str, value: Any, maximum: int) -> int:
    """An integer argument in [0, maximum], with Python's usual errors."""
    if isinstance(value, float) or not hasattr(value, "__index__"):
        raise TypeError(f"{name} must be an integer, not {type(value).__name__}")
    v = value.__index__()
    if v < 0:
        raise ValueError(f"{name} must not be negative (got {v})")
    if v > maximum:
        raise ValueError(f"{name} is too large (got {v}, at most {maximum})")
    return v


def _positive_arg(name: str, value: Any, maximum: int) -> int:
    """An integer argument in [1, maximum]."""
    v = _int_arg(name, value, maximum)
    if v == 0:
        raise ValueError(f"{name} must be at least 1")
    return v


def _has_derived_views(view: memoryview) -> bool:
    """True if memoryviews other than ``view`` share its underlying buffer.

    Slices and casts of a memoryview do not count as exports of it (so
    ``view.release()`` would succeed) but keep reading the same memory. In
    CPython each of them holds a reference to the shared "managed buffer"
    object, which is the one object a memoryview's traversal reports, so
    its reference count tells whether any exist. Other interpreters answer
    False (no check).
    """
    if sys.implementation.name != "cpython":
        return False
    refs = gc.get_referents(view)
    if len(refs) != 1:
        return False
    mbuf = refs[0]
    del refs
    # held by: `view`, the local name `mbuf`, getrefcount's argument
    return sys.getrefcount(mbuf) > 3


# ---------------------------------------------------------------- Entry


class Entry:
    """One completed load: the file's bytes, or the error that stopped it.

    The bytes live in the loader's shared memory until ``release()``; until
    then the worker's queue slot stays taken, so release every entry (or
    use ``with entry:``). Releasing twice is harmless.
    """

    __slots__ = (
        "_ptr", "_worker", "_gen", "_pid", "_path", "_size", "_offset",
        "_error", "_view", "_released", "__weakref__",
    )

    def __init__(self, worker: Worker, ptr: Any) -> None:
        self._ptr = ptr
        self._worker = worker
        self._gen = worker._gen
        self._pid = _pid
        # os.fsdecode, minus its type dispatch: this runs once per file
        self._path: str = ffi.string(lib.asyncload_entry_path(ptr)).decode(_FS_ENCODING, _FS_ERRORS)
        self._size: int = lib.asyncload_entry_size(ptr)
        self._offset: int = lib.asyncload_entry_offset(ptr)
        self._error: int = -lib.asyncload_entry_error(ptr)
        self._view: Optional[memoryview] = None
        self._released = False
        worker._loader._entries.add(self)

    # -- metadata ---------------------------------------------------------

    @property
    def path(self) -> str:
        """The path exactly as it was requested (decoded with os.fsdecode)."""
        return self._path

    def get_filepath(self) -> str:
        """Prototype name for :attr:`path`."""
        return self._path

    @property
    def offset(self) -> int:
        """Byte offset of a range request; 0 for whole files."""
        return self._offset

    @property
    def size(self) -> int:
        """Number of bytes loaded (exact, no padding); 0 for a failed load."""
        return self._size

    @property
    def error(self) -> int:
        """0, or the (positive) errno that made this load fail."""
        return self._error

    @property
    def ok(self) -> bool:
        """True if the load succeeded."""
        return self._error == 0

    @property
    def released(self) -> bool:
        return self._released

    def raise_for_error(self) -> None:
        """Raise :class:`LoadError` if this load failed."""
        if self._error:
            # A load fails with EINVAL only for a path that is not a regular
            # file (bad arguments are refused at request time).
            msg = (_NOT_REGULAR if self._error == errno.EINVAL else strerror(self._error))
            raise LoadError(self._error, msg, self._path)

    # -- data -------------------------------------------------------------

    def _check_usable(self) -> None:
        if self._released:
            raise ValueError(f"entry for {self._path!r} was released")
        self.raise_for_error()

    @property
    def data(self) -> memoryview:
        """Zero-copy, read-only view of the bytes in shared memory.

        Valid until :meth:`release`, which invalidates it (using it then
        raises ValueError). While views derived from it (slices, casts,
        numpy arrays, PickleBuffer ...) are alive, ``release()`` refuses
        with BufferError: copy what must outlive the entry.
        Raises :class:`LoadError` for a failed load.
        """
        self._check_usable()
        view = self._view
        if view is None:
            if self._size == 0:
                view = memoryview(b"")
            else:
                # The data pointer carries a reference to the loader's
                # handle: even a view that outlives close() (a derived one
                # that release() could not revoke) keeps the region mapped,
                # so stale views read stale bytes, never unmapped memory.
                keep = self._worker._loader._cptr
                ptr = ffi.gc(lib.asyncload_entry_data(self._ptr),
                             lambda _p, _keep=keep: None)
                view = memoryview(ffi.buffer(ptr, self._size)).toreadonly()
            self._view = view
        return view

    def get_data(self) -> bytes:
        """A copy of the bytes (raises :class:`LoadError` for a failed load)."""
        self._check_usable()
        if self._size == 0:
            return b""
        return ffi.buffer(lib.asyncload_entry_data(self._ptr), self._size)[:]

    def __bytes__(self) -> bytes:
        return self.get_data()

    def __len__(self) -> int:
        return self._size

    # -- release ----------------------------------------------------------

    def _revoke_view(self) -> None:
        """Invalidate the view handed out, or raise BufferError if in use."""
        view = self._view
        if view is None:
            return
        if _has_derived_views(view):
            raise BufferError(
                f"views derived from the data of {self._path!r} are still alive; "
                "drop them (or copy the bytes) before releasing the entry"
            )
        view.release()  # BufferError if something holds a buffer export
        self._view = None

    def release(self) -> None:
        """Hand the entry back to the loader; its data must not be used after.

        Idempotent. Raises BufferError (and keeps the entry) while views
        derived from :attr:`data` are alive. An entry inherited through
        fork, or one whose worker or loader was closed, is only invalidated
        here: it belongs to another process or cannot be handed back.
        """
        with _entry_lock:
            if self._released:
                return
            self._revoke_view()
            self._released = True
            ptr, self._ptr = self._ptr, None
        w = self._worker
        if (self._pid == _pid and w._gen == self._gen and w._ptr is not None
                and w._loader._cptr is not None):
            lib.asyncload_entry_release(ptr)

    def _invalidate(self) -> None:
        """Called by Loader.close(): drop the entry without handing it back."""
        with _entry_lock:
            if self._released:
                return
            try:
                self._revoke_view()
            except BufferError:
                # The view stays readable (it keeps the mapping alive);
                # later release() calls see the closed loader and skip C.
                return
            self._released = True
            self._ptr = None

    def __enter__(self) -> Entry:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.release()
            return
        # Don't let a BufferError from release() hide the real exception;
        # the entry then stays held (the garbage collector retries).
        try:
            self.release()
        except BufferError:
            pass

    def __del__(self) -> None:
        # Backstop for entries dropped without release(): give the slot back
        # unless a derived view still reads the memory; then the worker
        # keeps the view, so that its close() can refuse while it lives.
        try:
            if not self._released:
                self.release()
        except BufferError:
            if self._view is not None and self._pid == _pid and self._gen == self._worker._gen:
                self._worker._kept_views.append(self._view)
        except Exception:
            pass

    def __repr__(self) -> str:
        state = "released" if self._released else (
            f"error={errno.errorcode.get(self._error, self._error)}" if self._error
            else f"size={self._size}")
        return f"<asyncload.Entry {self._path!r} offset={self._offset} {state}>"


# ---------------------------------------------------------------- Worker


class Worker:
    """One worker slot of a loader: request files, get completed entries.

    Obtained from :meth:`Loader.get_worker_context`. The slot is claimed
    lazily by the first process that uses it, so the object can be created
    in the parent and handed to a child (through fork, or pickled to a
    spawn/forkserver child). Safe to use from several threads of one
    process.
    """

    def __init__(self, loader: Loader, id: int) -> None:
        self._loader = loader
        self._id = id
        self._ptr: Any = None
        self._lock = threading.Lock()
        # Bumped whenever the C handle goes away, so entries obtained through
        # an old handle are never handed back through a new one.
        self._gen = 0
        # data views of entries dropped while views derived from them lived
        self._kept_views: List[memoryview] = []
        _all_workers.add(self)

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
            if ptr is not None and self._loader._cptr is not None:
                busy = []
                for e in list(self._loader._entries):
                    if (e._worker is self and e._gen == self._gen and e._pid == _pid
                            and not e._released):
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
                    raise BufferError(
                        f"views derived from the data of {busy[0]!r}"
                        f"{f' (and {len(busy) - 1} more)' if len(busy) > 1 else ''} are "
                        "still alive; drop them (or copy the bytes) before closing the worker")
            self._ptr = None
            self._gen += 1
            if ptr is not None and self._loader._cptr is not None:
                lib.asyncload_worker_free(ptr)

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
    def loader(self) -> Loader:
        return self._loader

    @property
    def in_flight(self) -> int:
        """Requests queued or being read, not yet returned by a get."""
        return int(lib.asyncload_worker_in_flight(self._handle()))

    # -- requests ---------------------------------------------------------

    def request(self, path: Optional[PathArg] = None, offset: int = 0,
                length: Optional[int] = None, *,
                filepath: Optional[PathArg] = None) -> bool:
        """Queue a load of ``path`` (or ``length`` bytes at ``offset``).

        Returns False when every entry of this worker is taken (release one
        and retry). Raises LoaderClosedError if the loader stopped,
        TypeError/ValueError for a bad path or range. The outcome of the load
        itself (missing file, ...) arrives with the entry. ``filepath`` is
        the prototype's name for ``path``.
        """
        if filepath is not None:
            if path is not None:
                raise TypeError("give either path or filepath, not both")
            path = filepath
        if path is None:
            raise TypeError("request() needs a path")
        raw = encode_path(path)
        off = _int_arg("offset", offset, _U64_MAX)
        w = self._handle()
        if length is None and off == 0:
            rc = lib.asyncload_worker_request(w, raw)
        else:
            n = lib.ASYNCLOAD_WHOLE_FILE if length is None else _int_arg(
                "length", length, _U64_MAX)
            rc = lib.asyncload_worker_request_range(w, raw, off, n)
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
        return Entry(self, out[0])

    def wait_get(self, timeout: Optional[float] = None) -> Entry:
        """Sleep until an entry completes and return it.

        ``timeout`` in seconds (None: forever) raises TimeoutError when it
        passes. The GIL is released while sleeping and Ctrl-C interrupts the
        wait (KeyboardInterrupt). Raises LoaderClosedError within about a
        second if the loader is shut down or dies.
        """
        deadline = 0.0
        if timeout is not None:
            if not isinstance(timeout, numbers.Real):
                raise TypeError(f"timeout must be a number or None, not {type(timeout).__name__}")
            t = float(timeout)
            if not t >= 0:  # also rejects NaN
                raise ValueError(f"timeout must be >= 0 or None (got {timeout!r})")
            deadline = time.monotonic() + t
        w = self._handle()
        out = ffi.new("asyncload_entry **")
        while True:
            if timeout is None:
                ms = _WAIT_SLICE_MS
            else:
                ms = min(_WAIT_SLICE_MS,
                         max(0, math.ceil((deadline - time.monotonic()) * 1000)))
            rc = lib.asyncload_worker_wait_get(w, out, ms)
            if rc == 0:
                return Entry(self, out[0])
            if rc == -errno.ETIMEDOUT:
                if timeout is not None and time.monotonic() >= deadline:
                    raise TimeoutError(errno.ETIMEDOUT,
                                       f"no entry completed within {timeout} s")
            elif rc != -errno.EINTR:
                check_error(rc)
            # Looping back gives the interpreter the chance to run pending
            # signal handlers (KeyboardInterrupt) before sleeping again.

    def load(self, paths: Iterable[LoadRequest], *,
             timeout: Optional[float] = None) -> Iterator[Entry]:
        """Load many files, keeping the queue full; yield entries as they complete.

        Items are paths, or ``(path, offset, length)`` tuples for ranges.
        Entries come in completion order, not request order. **The caller
        owns every yielded entry and must release it** (``with entry:``);
        entries still held limit how many loads can be in flight, and if the
        caller holds all of them, load() raises RuntimeError instead of
        waiting forever. Failed loads are yielded too (check ``entry.error``
        or let ``get_data()`` raise). If the iteration stops early, the
        loads it already queued are waited for and released, so they never
        surface in later gets. Assumes no other thread uses this worker
        meanwhile.
        """
        it = iter(paths)
        pending: Optional[Tuple[bytes, int, int]] = None  # encoded, not yet queued
        exhausted = False
        outstanding = 0
        depth = self._loader.queue_depth
        # Refill in bursts once half the queue has drained, not one request
        # per completion: the loader then wakes once per burst and answers it
        # in one batch, instead of the two processes taking turns per file.
        low_water = depth // 2
        wptr = self._handle()
        req_whole = lib.asyncload_worker_request
        req_range = lib.asyncload_worker_request_range
        whole = lib.ASYNCLOAD_WHOLE_FILE
        try:
            while True:
                if outstanding <= low_water:
                    while not exhausted:
                        if pending is None:
                            try:
                                item = next(it)
                            except StopIteration:
                                exhausted = True
                                break
                            if isinstance(item, tuple):
                                p, off, ln = item
                                pending = (encode_path(p), _int_arg("offset", off, _U64_MAX),
                                           whole if ln is None else _int_arg("length", ln, _U64_MAX))
                            else:
                                pending = (encode_path(item), 0, whole)
                        raw, off, ln = pending
                        if off == 0 and ln == whole:
                            rc = req_whole(wptr, raw)
                        else:
                            rc = req_range(wptr, raw, off, ln)
                        if rc < 0:
                            if rc == -errno.EAGAIN:
                                break
                            check_error(rc, os.fsdecode(raw))
                        pending = None
                        outstanding += 1
                if outstanding == 0:
                    if exhausted:
                        return
                    raise RuntimeError(
                        "Worker.load(): no free entry and none in flight; release the "
                        "entries it yields (e.g. `with entry:`) before taking more"
                    )
                entry = self.wait_get(timeout)
                outstanding -= 1
                yield entry
        finally:
            while outstanding > 0:
                try:
                    self.wait_get(timeout).release()
                except (LoaderClosedError, TimeoutError):
                    break
                outstanding -= 1

    # -- pickling ---------------------------------------------------------

    def __reduce__(self) -> Tuple[Any, Tuple[str, int]]:
        return (_rebuild_worker, (self._loader.handle, self._id))

    def __repr__(self) -> str:
        claimed = "claimed" if self._ptr is not None else "unclaimed"
        return f"<asyncload.Worker id={self._id} {claimed} loader={self._loader.handle!r}>"


# ---------------------------------------------------------------- Loader


class Loader:
    """A loader: the shared region, plus the process that fills it.

    ``Loader(queue_depth, max_file_size, n_workers, dispatch_n=1,
    idle_iters=0, direct=False, root=None, n_threads=0)`` creates the region; then either
    :meth:`spawn_loader` forks the loader process, or :meth:`become_loader`
    makes this process the loader. ``with Loader(...) as loader:`` spawns it
    (if not started) and shuts down and closes on exit.
    """

    _cptr: Any

    def __init__(self, queue_depth: int, max_file_size: int, n_workers: int,
                 dispatch_n: int = 1, idle_iters: int = 0, direct: bool = False,
                 root: Optional[PathArg] = None, n_threads: int = 0) -> None:
        self._cptr = None  # so close()/__del__ work if validation fails
        opts = ffi.new("struct asyncload_options *")
        lib.asyncload_options_init(opts)
        opts.queue_depth = _positive_arg("queue_depth", queue_depth,
                                         int(lib.ASYNCLOAD_MAX_QUEUE_DEPTH))
        opts.max_file_size = _positive_arg("max_file_size", max_file_size,
                                           int(lib.ASYNCLOAD_MAX_FILE_SIZE))
        opts.n_workers = _positive_arg("n_workers", n_workers, int(lib.ASYNCLOAD_MAX_WORKERS))
        if opts.n_workers * opts.queue_depth > lib.ASYNCLOAD_MAX_ENTRIES:
            raise ValueError(
                f"n_workers * queue_depth is too large ({opts.n_workers} * {opts.queue_depth}, "
                f"at most {int(lib.ASYNCLOAD_MAX_ENTRIES)} entries)")
        opts.dispatch_n = _int_arg("dispatch_n", dispatch_n, _U32_MAX)
        opts.idle_iters = _int_arg("idle_iters", idle_iters, int(lib.ASYNCLOAD_MAX_IDLE_ITERS))
        if not isinstance(direct, (bool, int)):
            raise TypeError(f"direct must be a bool, not {type(direct).__name__}")
        opts.direct = bool(direct)
        opts.n_threads = _int_arg("n_threads", n_threads, int(lib.ASYNCLOAD_MAX_THREADS))
        root_c = ffi.new("char[]", encode_path(root)) if root is not None else ffi.NULL
        opts.root = root_c
        out = ffi.new("asyncload_loader **")
        check_error(lib.asyncload_loader_new(out, opts))
        self._setup(out[0], owner=True)

    @classmethod
    def attach(cls, handle: Union[str, bytes]) -> Loader:
        """Attach to a running loader by its :attr:`handle` string.

        For processes not forked from the creator. Unpickling a Loader or
        Worker does this automatically (once per handle per process).
        FileNotFoundError if the loader is gone, ValueError if malformed.
        """
        if isinstance(handle, str):
            raw = handle.encode("ascii", "strict")
        elif isinstance(handle, bytes):
            raw = handle
        else:
            raise TypeError(f"handle must be str, not {type(handle).__name__}")
        if b"\0" in raw or not raw:
            raise ValueError("malformed loader handle")
        self = cls.__new__(cls)
        self._cptr = None
        out = ffi.new("asyncload_loader **")
        check_error(lib.asyncload_loader_attach(out, raw))
        self._setup(out[0], owner=False)
        return self

    def _setup(self, ptr: Any, owner: bool) -> None:
        # ffi.gc only as a backstop: close() frees deterministically.
        self._cptr = ffi.gc(ptr, lib.asyncload_loader_free)
        self._owner = owner
        self._creator_pid = os.getpid()
        self._pid: Optional[int] = None
        self._lock = threading.RLock()
        # one Event per become_loader() call in progress in this process
        self._runs: list[threading.Event] = []
        self._workers: "weakref.WeakValueDictionary[int, Worker]" = (
            weakref.WeakValueDictionary())
        self._entries: "weakref.WeakSet[Entry]" = weakref.WeakSet()
        buf = ffi.new("char[]", lib.ASYNCLOAD_HANDLE_MAX)
        n = check_error(lib.asyncload_loader_handle(ptr, buf, lib.ASYNCLOAD_HANDLE_MAX))
        self._handle_str = ffi.string(buf, n).decode("ascii")
        opts = ffi.new("struct asyncload_options *")
        check_error(lib.asyncload_loader_get_options(ptr, opts))
        self._queue_depth = int(opts.queue_depth)
        self._max_file_size = int(opts.max_file_size)
        self._n_workers = int(opts.n_workers)
        self._dispatch_n = int(opts.dispatch_n)
        self._idle_iters = int(opts.idle_iters)
        self._direct = bool(opts.direct)
        _all_loaders.add(self)
        with _registry_lock:
            _by_handle[self._handle_str] = self

    def _live(self) -> Any:
        ptr = self._cptr
        if ptr is None:
            raise LoaderClosedError("this Loader was closed")
        return ptr

    # -- properties -------------------------------------------------------

    @property
    def handle(self) -> str:
        """String that lets any process of this user attach (see attach())."""
        return self._handle_str

    @property
    def pid(self) -> Optional[int]:
        """Pid of the process spawn_loader() started, else None."""
        return self._pid

    @property
    def closed(self) -> bool:
        return self._cptr is None

    @property
    def running(self) -> bool:
        """True while a loader process/thread serves this region."""
        ptr = self._cptr
        return ptr is not None and lib.asyncload_loader_status(ptr) == 0

    @property
    def queue_depth(self) -> int:
        """Entries per worker (most loads one worker has in flight)."""
        return self._queue_depth

    @property
    def max_file_size(self) -> int:
        """Largest file or range one entry holds."""
        return self._max_file_size

    @property
    def n_workers(self) -> int:
        return self._n_workers

    @property
    def dispatch_n(self) -> int:
        return self._dispatch_n

    @property
    def idle_iters(self) -> int:
        return self._idle_iters

    @property
    def direct(self) -> bool:
        """True if reads bypass the page cache (O_DIRECT)."""
        return self._direct

    # -- running the loader -----------------------------------------------

    def spawn_loader(self) -> int:
        """Fork the loader process; returns its pid once it serves requests."""
        with self._lock:
            out = ffi.new("pid_t *")
            check_error(lib.asyncload_loader_spawn(self._live(), out))
            self._pid = int(out[0])
            return self._pid

    def become_loader(self) -> None:
        """Be the loader in this process until :meth:`shutdown` is called.

        In the main thread the C event loop runs in a helper thread while
        the main thread waits in short slices, so Ctrl-C still works: it
        shuts the loader down and KeyboardInterrupt propagates.
        """
        ptr = self._live()
        done = threading.Event()
        with self._lock:
            self._runs.append(done)
        result: list[int] = []

        def run() -> None:
            try:
                result.append(lib.asyncload_loader_run(ptr))
            finally:
                done.set()

        try:
            if threading.current_thread() is not threading.main_thread():
                run()
            else:
                t = threading.Thread(target=run, name="asyncload-loader", daemon=True)
                try:
                    # start() itself waits, so Ctrl-C may land inside it:
                    # keep it in the try, or the loop would run unstopped.
                    t.start()
                    while not done.wait(_WAIT_SLICE_MS / 1000):
                        pass
                except BaseException:
                    # Before the loop started, shutdown() makes run() return
                    # at once; after, it stops the loop.
                    lib.asyncload_loader_shutdown(ptr)
                    if t.is_alive() or t.ident is not None:
                        done.wait(10)
                    raise
        finally:
            with self._lock:
                self._runs.remove(done)
        if result:
            check_error(result[0])

    def shutdown(self) -> None:
        """Ask the loader to stop (from any process); does not wait.

        Loads being read complete, the others complete with ESHUTDOWN;
        waiting workers get LoaderClosedError. No-op on a closed Loader.
        """
        ptr = self._cptr
        if ptr is None:
            return
        rc = lib.asyncload_loader_shutdown(ptr)
        if rc != -errno.ESHUTDOWN:
            check_error(rc)

    def close(self) -> None:
        """Unmap the region (idempotent). In the process that spawned the
        loader this also shuts it down and reaps it.

        Entries still held are invalidated; one whose data view is still
        exported keeps the region mapped until that view is gone.
        """
        with self._lock:
            ptr = self._cptr
            if ptr is None:
                return
            # A loop still running in this process (become_loader) reads the
            # region: stop it before unmapping.
            if self._runs:
                lib.asyncload_loader_shutdown(ptr)
                for done in list(self._runs):
                    done.wait(10)
            clean = True
            for e in list(self._entries):
                e._invalidate()
                clean = clean and e._released
            for w in list(self._workers.values()):
                try:
                    w.close()
                except BufferError:
                    # A view of one of its entries survives: the slot stays
                    # claimed by this process (until it exits), so no other
                    # claim reuses the bytes under that view.
                    pass
            self._cptr = None
            with _registry_lock:
                if _by_handle.get(self._handle_str) is self:
                    del _by_handle[self._handle_str]
                if _attached.get(self._handle_str) is self:
                    del _attached[self._handle_str]
            if clean:
                ffi.release(ptr)
            # else: the views that survive hold `ptr`; the ffi.gc destructor
            # frees (and reaps) when the last of them goes away.

    def __enter__(self) -> Loader:
        ptr = self._live()
        if lib.asyncload_loader_status(ptr) == -errno.EAGAIN:
            self.spawn_loader()
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        # Only the creating process stops the loader: a forked child or an
        # attached process leaving a `with` must not stop it for everyone.
        if self._owner and os.getpid() == self._creator_pid:
            try:
                self.shutdown()
            except OSError:
                pass
        self.close()

    # -- workers ----------------------------------------------------------

    def get_worker_context(self, id: int) -> Worker:
        """The Worker for slot ``id`` (0 <= id < n_workers).

        The same object is returned while it is alive. It claims the slot
        in the process that first uses it.
        """
        i = _int_arg("id", id, _U32_MAX)
        if i >= self._n_workers:
            raise ValueError(f"worker id {i} out of range (n_workers={self._n_workers})")
        self._live()
        with self._lock:
            w = self._workers.get(i)
            if w is None:
                w = Worker(self, i)
                self._workers[i] = w
            return w

    # -- pickling ---------------------------------------------------------

    def __reduce__(self) -> Tuple[Any, Tuple[str]]:
        return (_rebuild_loader, (self.handle,))

    def __repr__(self) -> str:
        state = "closed" if self._cptr is None else (
            "running" if self.running else "not running")
        return (f"<asyncload.Loader {self._handle_str!r} {state} queue_depth="
                f"{self._queue_depth} n_workers={self._n_workers}>")


def _rebuild_loader(handle: str) -> Loader:
    """Unpickle: the Loader of this handle already in this process, or attach."""
    with _registry_lock:
        loader = _by_handle.get(handle)
        if loader is not None and not loader.closed:
            return loader
        loader = Loader.attach(handle)
        _attached[handle] = loader
        return loader


def _rebuild_worker(handle: str, id: int) -> Worker:
    return _rebuild_loader(handle).get_worker_context(id)
