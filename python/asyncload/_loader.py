"""Loader: the shared region and the life of the process that fills it.

Owns creating a region from checked options (_options.py), attaching to one
by handle, spawning or becoming the loader, shutdown and close (which
invalidates the entries and workers still held), handing out Worker objects,
and pickling: a Loader or Worker unpickled in another process attaches once
per handle and shares that mapping.
"""

from __future__ import annotations

import errno
import os
import threading
import weakref
from typing import Any, Callable, Dict, Optional, Tuple, Union

from . import _state
from ._entry import Entry, LiveEntries
from ._lowlevel import LoaderClosedError, check_error, ffi, lib
from ._options import OPTIONS, describe, make_options, read_options, signature
from ._state import U32_MAX, WAIT_SLICE_MS, int_arg
from ._worker import Worker

__all__ = ["Loader"]


class Loader:
    """A loader: the shared region, plus the process that fills it.

    ``Loader(queue_depth, max_file_size, n_workers, **options)`` creates the
    region (the options and their defaults are listed below); then either
    :meth:`spawn_loader` forks the loader process, or :meth:`become_loader`
    makes this process the loader. ``with Loader(...) as loader:`` spawns it
    (if not started) and shuts down and closes on exit.
    """

    _cptr: Any

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._cptr = None  # so close()/__del__ work if validation fails
        opts, _keep = make_options(args, kwargs)
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
        self._c = _state.CLoader()
        self._cptr = ffi.gc(ptr, self._c.destructor())
        self._owner = owner
        self._creator_pid = os.getpid()
        self._pid: Optional[int] = None
        self._lock = threading.RLock()
        # one Event per become_loader() call in progress in this process
        self._runs: list[threading.Event] = []
        self._workers: "weakref.WeakValueDictionary[int, Worker]" = (
            weakref.WeakValueDictionary())
        self._entries = LiveEntries()
        # the ffi.gc destructor of every data pointer handed out: it keeps
        # the handle (so the mapping) alive while a view of the bytes lives
        self._keep_region: Optional[Callable[[Any], None]] = lambda _p, _keep=self._cptr: None
        buf = ffi.new("char[]", lib.ASYNCLOAD_HANDLE_MAX)
        n = check_error(lib.asyncload_loader_handle(ptr, buf, lib.ASYNCLOAD_HANDLE_MAX))
        self._handle_str = ffi.string(buf, n).decode("ascii")
        opts = ffi.new("struct asyncload_options *")
        check_error(lib.asyncload_loader_get_options(ptr, opts))
        self._options = read_options(opts)
        _state.all_loaders.add(self)
        with _state.registry_lock:
            _state.by_handle[self._handle_str] = self

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

    # One read-only property per option of the C table (added below the
    # class), e.g. queue_depth, max_file_size, n_workers, dispatch_n,
    # idle_iters, direct (True: O_DIRECT, bypassing the page cache), root,
    # n_threads (as resolved by the loader). Typed here for checkers:
    queue_depth: int
    max_file_size: int
    n_workers: int
    dispatch_n: int
    idle_iters: int
    direct: bool

    @property
    def engine(self) -> str:
        """How the loader does I/O: "io_uring" or "threads" once it runs
        (before that, the engine asked for: "auto" possible)."""
        return ffi.string(lib.asyncload_loader_engine(self._live())).decode("ascii")

    @property
    def engine_reason(self) -> str:
        """Why that engine runs, in words; "" before the loader started."""
        return ffi.string(lib.asyncload_loader_engine_reason(self._live())).decode("utf-8")

    def stats(self) -> Dict[str, Any]:
        """What the loader says of itself, as a dict: ``engine`` (the one that
        runs) and ``engine_reason`` (why: "asked for", or why io_uring could
        not be used, so a slower engine is never chosen silently); and what
        it did so far, counted in shared memory (every attached process
        sees the same): ``hits`` and ``misses`` of the cache (misses stay 0
        without one), ``bytes_from_storage`` (of successful loads read from
        files), ``bytes_from_cache``, ``cache_bytes_used`` (handed out, at
        most ``cache_bytes``) and ``cache_bytes``."""
        st = ffi.new("struct asyncload_stats *")
        check_error(lib.asyncload_loader_stats(self._live(), st))
        out: Dict[str, Any] = {"engine": self.engine, "engine_reason": self.engine_reason}
        for name in ("hits", "misses", "bytes_from_storage", "bytes_from_cache",
                     "cache_bytes_used", "cache_bytes"):
            out[name] = int(getattr(st, name))
        return out

    @property
    def options(self) -> Dict[str, Any]:
        """Every option of this loader, by name (a copy)."""
        return dict(self._options)

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
                    while not done.wait(WAIT_SLICE_MS / 1000):
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
            self._keep_region = None  # it holds the handle: the deferred free must run
            with _state.registry_lock:
                if _state.by_handle.get(self._handle_str) is self:
                    del _state.by_handle[self._handle_str]
                if _state.attached.get(self._handle_str) is self:
                    del _state.attached[self._handle_str]
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
        i = int_arg("id", id, U32_MAX)
        if i >= self.n_workers:
            raise ValueError(f"worker id {i} out of range (n_workers={self.n_workers})")
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
                f"{self.queue_depth} n_workers={self.n_workers}>")


def _rebuild_loader(handle: str) -> Loader:
    """Unpickle: the Loader of this handle already in this process, or attach."""
    with _state.registry_lock:
        loader = _state.by_handle.get(handle)
        if loader is not None and not loader.closed:
            return loader
        loader = Loader.attach(handle)
        _state.attached[handle] = loader
        return loader


def _rebuild_worker(handle: str, id: int) -> Worker:
    return _rebuild_loader(handle).get_worker_context(id)


def _option_property(name: str, doc: str) -> Any:
    return property(lambda self: self._options[name], doc=doc)


for _o in OPTIONS:
    if not hasattr(Loader, _o.name):  # engine: the running one, defined above
        setattr(Loader, _o.name, _option_property(_o.name, _o.doc))

Loader.__init__.__signature__ = signature()  # type: ignore[attr-defined]
if Loader.__doc__:  # None under python -OO
    Loader.__doc__ = f"{Loader.__doc__.rstrip()}\n\n    Options:\n{describe()}\n"
