"""Per-process state shared by the classes, and the small argument checks they all use.

Owns: the pid copy entries compare against, the registries of live Loaders
and Workers (so a forked child can forget what belongs to its parent), the
handle -> Loader maps that unpickling uses, the locks, the at-fork hook, and
the integer, timeout and request argument checks with their error messages.
"""

from __future__ import annotations

import math
import numbers
import os
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any, Dict, Optional, Tuple

from ._lowlevel import PathArg, encode_path, lib

if TYPE_CHECKING:
    from ._loader import Loader
    from ._worker import Worker

# Longest single sleep inside the C library. The waits are cut into slices
# this long so that the interpreter gets back control regularly and can run
# a pending SIGINT handler even when the signal went to another thread.
WAIT_SLICE_MS = 100

U32_MAX = 0xFFFF_FFFF
U64_MAX = 0xFFFF_FFFF_FFFF_FFFF
WHOLE_FILE: int = lib.ASYNCLOAD_WHOLE_FILE

# getpid() is a real system call on current glibc; entries compare against
# this copy instead, kept right by the at-fork hook below.
pid = os.getpid()

# All live objects whose per-process state must be dropped in a forked child.
all_workers: "weakref.WeakSet[Worker]" = weakref.WeakSet()
all_loaders: "weakref.WeakSet[Loader]" = weakref.WeakSet()

# handle string -> Loader usable in this process (created here, inherited
# through fork, or attached). Weak: it must not keep a creator's loader alive.
by_handle: "weakref.WeakValueDictionary[str, Loader]" = weakref.WeakValueDictionary()
# Attachments made while unpickling: kept alive so that every unpickled
# Worker/Loader of one handle shares a single mapping per process.
attached: Dict[str, "Loader"] = {}
registry_lock = threading.RLock()
# Guards the released flag of entries, so two threads releasing the same
# entry cannot hand it back to the loader twice. Reentrant because a garbage
# collection inside a release (allocations can trigger one) may run
# Entry.__del__ -> release() of another entry on the same thread.
entry_lock = threading.RLock()


class CLoader:
    """Whether a Loader's C handle still exists, and the C workers made from it.

    The handle is freed by an ffi.gc destructor, and at interpreter exit the
    garbage collector may run that destructor before the finalizers of the
    Workers and Entries that use it (the order inside one batch of garbage is
    arbitrary). So the destructor frees the C workers first and clears
    ``alive``, and Workers and Entries look here before calling into C.
    """

    __slots__ = ("alive", "workers")

    def __init__(self) -> None:
        self.alive = True
        self.workers: "set[Any]" = set()  # asyncload_worker * claimed through this handle

    def destructor(self) -> Any:
        """The function ffi.gc calls with the loader pointer."""
        def free(ptr: Any, cell: CLoader = self, lib: Any = lib) -> None:
            # lib bound now: module globals may be gone when this runs at exit
            cell.alive = False
            for w in list(cell.workers):
                lib.asyncload_worker_free(w)
            cell.workers.clear()
            lib.asyncload_loader_free(ptr)
        return free


def _after_fork_in_child() -> None:
    """Forget per-process state inherited from the parent.

    A worker slot belongs to the process that claimed it, so an inherited
    C worker handle must not be used (or freed: that would give the
    parent's slot away). Locks may have been held by a parent thread that
    does not exist here.
    """
    global pid, registry_lock, entry_lock
    pid = os.getpid()
    registry_lock = threading.RLock()
    entry_lock = threading.RLock()
    for w in list(all_workers):
        w._forget_after_fork()
    for loader in list(all_loaders):
        loader._lock = threading.RLock()
        loader._c.workers.clear()  # the parent's, not to be freed here
        loader._runs = []  # the threads running them did not survive fork


os.register_at_fork(after_in_child=_after_fork_in_child)


def int_arg(name: str, value: Any, maximum: int, minimum: int = 0) -> int:
    """An integer argument in [minimum, maximum], with Python's usual errors."""
    if isinstance(value, float) or not hasattr(value, "__index__"):
        raise TypeError(f"{name} must be an integer, not {type(value).__name__}")
    v = value.__index__()
    if v < 0:
        raise ValueError(f"{name} must not be negative (got {v})")
    if v < minimum:
        raise ValueError(f"{name} must be at least {minimum} (got {v})")
    if v > maximum:
        raise ValueError(f"{name} is too large (got {v}, at most {maximum})")
    return v


def deadline_of(timeout: Optional[float]) -> Optional[float]:
    """The monotonic time at which a wait of ``timeout`` seconds ends (None: never)."""
    if timeout is None:
        return None
    if not isinstance(timeout, numbers.Real):
        raise TypeError(f"timeout must be a number or None, not {type(timeout).__name__}")
    t = float(timeout)
    if not t >= 0:  # also rejects NaN
        raise ValueError(f"timeout must be >= 0 or None (got {timeout!r})")
    return time.monotonic() + t


def slice_ms(deadline: Optional[float]) -> int:
    """How long the next sleep inside C may last: one slice, or what is left."""
    if deadline is None:
        return WAIT_SLICE_MS
    return min(WAIT_SLICE_MS, max(0, math.ceil((deadline - time.monotonic()) * 1000)))


def encode_request(path: PathArg, offset: Any = 0, length: Any = None) -> Tuple[bytes, int, int]:
    """(path bytes, offset, length) as asyncload_worker_submit takes them;
    ``length`` None is the whole file (ASYNCLOAD_WHOLE_FILE)."""
    raw = encode_path(path)
    off = int_arg("offset", offset, U64_MAX)
    n = WHOLE_FILE if length is None else int_arg("length", length, U64_MAX)
    return raw, off, n
