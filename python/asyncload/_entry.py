"""Entry: one completed load, and the zero-copy view of its bytes.

Owns what a completion carries (path, offset, size, error, tag), the
read-only memoryview over the shared memory and the rules that keep it safe:
a view is revoked on release, release() refuses while derived views are
alive, and an entry inherited through fork or outliving its worker or loader
is only invalidated, never handed back.

Lifetime: Entry -> Worker -> Loader hold strong references (an entry keeps
its mapping alive); Loader -> Worker/Entry references are weak, so there is
no reference cycle and objects die in a deterministic order.
"""

from __future__ import annotations

import errno
import gc
import operator
import sys
import weakref
from typing import TYPE_CHECKING, Any, Dict, Iterator, List, Optional

from . import _state
from ._lowlevel import LoadError, ffi, lib, strerror

if TYPE_CHECKING:
    from ._worker import Worker

__all__ = ["Entry", "LiveEntries"]

_new = object.__new__
_gc = ffi.gc
_buffer = ffi.buffer
_entry_data = lib.asyncload_entry_data
_entry_release = lib.asyncload_entry_release
_CPYTHON = sys.implementation.name == "cpython"
_referents = gc.get_referents
_getrefcount = sys.getrefcount
_ref = weakref.ref
_NOT_REGULAR = "Not a regular file (FIFO, socket or device)"
_FS_ENCODING = sys.getfilesystemencoding()
_FS_ERRORS = sys.getfilesystemencodeerrors()


def _has_derived_views(view: memoryview) -> bool:
    """True if memoryviews other than ``view`` share its underlying buffer.

    Slices and casts of a memoryview do not count as exports of it (so
    ``view.release()`` would succeed) but keep reading the same memory. In
    CPython each of them holds a reference to the shared "managed buffer"
    object, which is the one object a memoryview's traversal reports, so
    its reference count tells whether any exist. Other interpreters answer
    False (no check).
    """
    if not _CPYTHON:
        return False
    refs = _referents(view)
    if len(refs) != 1:
        return False
    mbuf = refs[0]
    del refs
    # held by: `view`, the local name `mbuf`, getrefcount's argument
    return _getrefcount(mbuf) > 3


class LiveEntries:
    """A loader's entries not yet released, held weakly, for close() to walk.

    Weak references without callbacks in a dict keyed by id(), each entry
    removing its own in release(): a WeakSet costs about twice as much per
    entry (a Python-level add and a removal callback at death), and this runs
    once per file.
    """

    __slots__ = ("_refs",)

    def __init__(self) -> None:
        self._refs: Dict[int, "weakref.ref[Entry]"] = {}

    def add(self, entry: "Entry") -> None:
        self._refs[id(entry)] = weakref.ref(entry)

    def __iter__(self) -> Iterator["Entry"]:
        live: List[Entry] = []
        for key, ref in list(self._refs.items()):
            e = ref()
            if e is None:
                self._refs.pop(key, None)  # died held (a derived view kept it from release)
            else:
                live.append(e)
        return iter(live)


def _field(slot: str, doc: str) -> Any:
    """A read-only property that returns the attribute ``slot``."""
    return property(operator.attrgetter(slot), doc=doc)


class Entry:
    """One completed load: the file's bytes, or the error that stopped it.

    The bytes live in the loader's shared memory until ``release()``; until
    then the worker's queue slot stays taken, so release every entry (or
    use ``with entry:``). Releasing twice is harmless.
    """

    __slots__ = (
        "_ptr", "_worker", "_gen", "_pid", "_path", "_size", "_offset",
        "_tag", "_error", "_view", "_released", "__weakref__",
    )

    def __init__(self, worker: "Worker", ptr: Any) -> None:
        self._ptr = ptr
        self._worker = worker
        self._gen = worker._gen
        self._pid = _state.pid
        # os.fsdecode, minus its type dispatch: this runs once per file
        self._path: str = ffi.string(lib.asyncload_entry_path(ptr)).decode(_FS_ENCODING, _FS_ERRORS)
        self._size: int = lib.asyncload_entry_size(ptr)
        self._offset: int = lib.asyncload_entry_offset(ptr)
        self._tag: int = lib.asyncload_entry_tag(ptr)
        self._error: int = -lib.asyncload_entry_error(ptr)
        self._view: Optional[memoryview] = None
        self._released = False
        worker._loader._entries.add(self)

    @classmethod
    def _from_fields(cls, worker: "Worker", ptr: Any, path: str, size: int, offset: int,
                     tag: int, error: int) -> "Entry":
        """An entry whose fields the caller already has (fill(): one C call a
        batch, the path from the request), without __init__'s C calls."""
        self = _new(cls)
        self._ptr = ptr
        self._worker = worker
        self._gen = worker._gen
        self._pid = _state.pid
        self._path = path
        self._size = size
        self._offset = offset
        self._tag = tag
        self._error = error
        self._view = None
        self._released = False
        worker._loader._entries._refs[id(self)] = _ref(self)  # LiveEntries.add, inlined
        return self

    # -- metadata ---------------------------------------------------------

    # Read once in __init__ (one C call each), then plain attribute reads.
    path: str = _field("_path", "The path exactly as it was requested (decoded with os.fsdecode).")
    offset: int = _field("_offset", "Byte offset of a range request; 0 for whole files.")
    tag: int = _field("_tag", "The 64-bit tag given to the request "
                      "(``Worker.load()``: the item's index).")
    size: int = _field("_size", "Number of bytes loaded (exact, no padding); 0 for a failed load.")
    error: int = _field("_error", "0, or the (positive) errno that made this load fail.")
    released: bool = _field("_released", "True once the entry was handed back.")

    def get_filepath(self) -> str:
        """Prototype name for :attr:`path`."""
        return self._path

    @property
    def ok(self) -> bool:
        """True if the load succeeded."""
        return self._error == 0

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
        view = self._view
        if view is not None and not self._released:
            return view
        if self._released or self._error:
            self._check_usable()
        if self._size == 0:
            view = memoryview(b"")
        else:
            # The data pointer carries a reference to the loader's handle
            # (the loader's keep_region callback holds it): even a view that
            # outlives close() (a derived one that release() could not
            # revoke) keeps the region mapped, so stale views read stale
            # bytes, never unmapped memory.
            ptr = _gc(_entry_data(self._ptr), self._worker._loader._keep_region)
            view = memoryview(_buffer(ptr, self._size)).toreadonly()
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
        with _state.entry_lock:
            if self._released:
                return
            view = self._view
            if view is not None:
                # _revoke_view, inlined (this runs once per file)
                if _has_derived_views(view):
                    self._revoke_view()  # raises BufferError with the message
                view.release()
                self._view = None
            self._released = True
            ptr, self._ptr = self._ptr, None
        w = self._worker
        loader = w._loader
        # out of the loader's live entries: while this entry lives, its id is its own
        loader._entries._refs.pop(id(self), None)
        if (self._pid == _state.pid and w._gen == self._gen and w._ptr is not None
                and loader._cptr is not None and loader._c.alive):
            _entry_release(ptr)

    def _invalidate(self) -> None:
        """Called by Loader.close(): drop the entry without handing it back."""
        with _state.entry_lock:
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

    def __enter__(self) -> "Entry":
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
            if self._view is not None and self._pid == _state.pid and self._gen == self._worker._gen:
                self._worker._kept_views.append(self._view)
        except Exception:
            pass

    def __repr__(self) -> str:
        state = "released" if self._released else (
            f"error={errno.errorcode.get(self._error, self._error)}" if self._error
            else f"size={self._size}")
        return (f"<asyncload.Entry {self._path!r} offset={self._offset} tag={self._tag} "
                f"{state}>")
