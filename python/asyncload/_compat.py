"""The 2023 prototype's API (module ``AsyncLoader``) on top of asyncload's classes.

Programs written against the prototype follow its released code, which
disagrees with its README; this module accepts both call forms and returns
what the released code returned (``bytes`` paths). The classes are thin
subclasses of asyncload's, so every fix there applies here: nothing is
copied, only the argument parsing and the return types differ.
"""

from __future__ import annotations

import errno
import os
from typing import Any, Dict, Optional, Tuple

from . import _entry, _loader, _state, _worker
from ._lowlevel import lib

__all__ = ["Loader", "Worker", "Entry", "default_max_file_size"]

# The released code's form, in order; the first four were required.
_RELEASED = ("queue_depth", "n_workers", "dispatch_n", "max_idle_iters", "direct")
_RELEASED_REQUIRED = 4
# Keywords the released form also takes here (it had no such arguments).
_RELEASED_EXTRA = ("max_file_size", "root", "n_threads")
# The README's form, which is asyncload's own (plus its later arguments).
_README = ("queue_depth", "max_file_size", "n_workers", "dispatch_n", "idle_iters",
           "direct", "root", "n_threads")
_README_REQUIRED = ("queue_depth", "n_workers")

# Address space one default-sized region may take. The region is a sparse
# memfd mapped with MAP_NORESERVE: pages are committed only as files are
# loaded (and given back beyond the loader's working set), so this is
# virtual space only. 4 TiB lets about 30 loaders that were never closed
# coexist in one process (x86-64 user space is 128 TiB) before mmap fails.
_REGION_BUDGET = 1 << 42
# Per-entry bounds of the default: every file an image pipeline loads
# (ImageNet JPEGs average 110 KB, the largest are about 15 MB) and much
# larger ones, up to a GiB when the queue is shallow.
_DEFAULT_MAX = 1 << 30
_DEFAULT_MIN = 16 << 20  # below this, refuse (ValueError) rather than shrink further

_FORMS_HELP = (
    "AsyncLoader.Loader takes the released prototype's form "
    "(queue_depth, n_workers, dispatch_n, max_idle_iters, direct=False) or the README's "
    "(queue_depth, max_file_size, n_workers, dispatch_n, idle_iters, direct)"
)


def default_max_file_size(queue_depth: int, n_workers: int) -> int:
    """The ``max_file_size`` used when a call gives none.

    The largest power of two up to 1 GiB whose region (entries times
    per-entry buffer) stays within a 4 TiB address-space budget
    (plus two pages per entry): 1 GiB up
    to 4096 entries, 512 MiB at depth 8192 with one worker, 128 MiB with
    four, 64 MiB at the 65536-entry maximum.
    """
    entries = max(1, queue_depth * n_workers)
    # (each buffer also carries two pages, at most 512 MiB over the budget)
    size = 1 << ((_REGION_BUDGET // entries).bit_length() - 1)
    return max(_DEFAULT_MIN, min(_DEFAULT_MAX, size))


def _bind(names: Tuple[str, ...], extra: Tuple[str, ...], args: Tuple[Any, ...],
          kwargs: Dict[str, Any]) -> Tuple[Optional[Dict[str, Any]], str]:
    """Bind a call to one form: (arguments by name, "") or (None, why not)."""
    if len(args) > len(names):
        return None, f"at most {len(names)} positional arguments"
    bound = dict(zip(names, args))
    for k, v in kwargs.items():
        if k not in names and k not in extra:
            return None, f"no argument {k!r}"
        if k in bound:
            return None, f"{k!r} given by position and by keyword"
        bound[k] = v
    return bound, ""


def _parse_loader_args(args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> Dict[str, Any]:
    """Which form a call uses, and its arguments in asyncload's terms.

    The rule (also in the class docstring and README): a keyword decides
    first (``max_idle_iters``: released form; ``idle_iters``: README form).
    Otherwise a call that binds to one form only uses that form. A call
    that binds to both has 4 or 5 positional arguments, which is exactly
    what the released code took, so it is read as the released form; the
    values are then checked, and one that only makes sense in the README's
    reading (a second argument above MAX_WORKERS, i.e. a max_file_size, or
    a fifth that is not a bool) raises TypeError instead of loading with
    the wrong settings.
    """
    released, why_released = _bind(_RELEASED, _RELEASED_EXTRA, args, kwargs)
    readme, why_readme = _bind(_README, (), args, kwargs)
    if released is not None and any(k not in released for k in _RELEASED[:_RELEASED_REQUIRED]):
        missing = [k for k in _RELEASED[:_RELEASED_REQUIRED] if k not in released]
        released, why_released = None, f"missing {', '.join(missing)}"
    if readme is not None and any(k not in readme for k in _README_REQUIRED):
        missing = [k for k in _README_REQUIRED if k not in readme]
        readme, why_readme = None, f"missing {', '.join(missing)}"

    if released is None and readme is None:
        raise TypeError(f"{_FORMS_HELP}; as the released form: {why_released}; "
                        f"as the README form: {why_readme}")
    if released is not None and readme is not None:
        # Ambiguous: 4 or 5 positional arguments, no deciding keyword.
        nw = released["n_workers"]
        if isinstance(nw, int) and nw > int(lib.ASYNCLOAD_MAX_WORKERS):
            raise TypeError(
                f"{len(args)} positional arguments are read as the released form, where the "
                f"second is n_workers, but {nw} is more than {int(lib.ASYNCLOAD_MAX_WORKERS)} "
                "workers: it looks like the README form's max_file_size. Pass all six README "
                "arguments, or max_file_size=/idle_iters= by keyword")
        if "direct" in released and not _is_flag(released["direct"]):
            raise TypeError(
                f"{len(args)} positional arguments are read as the released form, whose fifth "
                f"is direct (a bool), not {released['direct']!r}: for the README form "
                "(fifth = idle_iters) pass all six arguments or idle_iters= by keyword")
        readme = None

    if released is not None:
        mii = released.pop("max_idle_iters")
        # The prototype counted busy-spin iterations (each far shorter than
        # our 50 us idle poll), so large counts were normal there; they all
        # mean "wait the longest before dispatching a partial batch".
        mii = _state.int_arg("max_idle_iters", mii, 2**64 - 1)
        released["idle_iters"] = min(mii, int(lib.ASYNCLOAD_MAX_IDLE_ITERS))
        return released
    assert readme is not None
    return readme


def _is_flag(v: Any) -> bool:
    return isinstance(v, bool) or (isinstance(v, int) and v in (0, 1))


class Entry(_entry.Entry):
    """A completed load, as the prototype returned it: ``get_filepath()`` is bytes."""

    __slots__ = ()

    def get_filepath(self) -> bytes:  # type: ignore[override]
        """The requested path as bytes (os.fsencode of :attr:`path`), as the prototype gave it."""
        return os.fsencode(self.path)


class Worker(_worker.Worker):
    """asyncload's Worker, handing out :class:`AsyncLoader.Entry` objects."""

    _entry_type = Entry

    def __reduce__(self) -> Tuple[Any, Tuple[str, int]]:
        return (_rebuild_worker, (self._loader.handle, self._id))


class Loader(_loader.Loader):
    """The prototype's Loader: both of its call forms, by position or keyword.

    Released code: ``Loader(queue_depth, n_workers, dispatch_n,
    max_idle_iters, direct=False)``. README: ``Loader(queue_depth,
    max_file_size, n_workers, dispatch_n, idle_iters, direct)`` (asyncload's
    own form; ``dispatch_n``, ``idle_iters`` and ``direct`` may be left out).

    Which form a call uses: the keyword ``max_idle_iters`` means the
    released form, ``idle_iters`` the README's. Without either, 4 or 5
    positional arguments are the released form (that is what its code
    took); 6 or more, or 3 or fewer, the README's. A 4- or 5-argument call
    whose second argument is above MAX_WORKERS (a README max_file_size), or
    whose fifth is not a bool, raises TypeError rather than being misread.

    ``max_file_size`` may be given by keyword in either form; without it,
    :func:`default_max_file_size` chooses (64 MiB to 1 GiB, from the entry
    count); larger files complete with an EFBIG error. ``max_idle_iters``
    above MAX_IDLE_ITERS is clamped (the prototype counted spins).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._cptr = None  # so close()/__del__ work if parsing fails
        a = _parse_loader_args(args, kwargs)
        mfs = a.pop("max_file_size", None)
        if mfs is not None:
            super().__init__(max_file_size=mfs, **a)
            return
        qd = _state.int_arg("queue_depth", a["queue_depth"], int(lib.ASYNCLOAD_MAX_QUEUE_DEPTH), minimum=1)
        nw = _state.int_arg("n_workers", a["n_workers"], int(lib.ASYNCLOAD_MAX_WORKERS), minimum=1)
        size = default_max_file_size(qd, nw)
        while True:
            try:
                super().__init__(max_file_size=size, **a)
                return
            except OSError as exc:
                # Address space itself can be short (RLIMIT_AS, other large
                # mappings): smaller buffers, down to a floor, then say so.
                if exc.errno != errno.ENOMEM:
                    raise
                if size <= _DEFAULT_MIN:
                    raise ValueError(
                        f"no room in this process's address space for {qd * nw} entries of "
                        f"{_DEFAULT_MIN >> 20} MiB (queue_depth={qd}, n_workers={nw}): use a "
                        "smaller queue_depth or n_workers, or pass max_file_size=") from exc
                size //= 2

    def get_worker_context(self, id: int) -> Worker:  # type: ignore[override]
        w = super().get_worker_context(id)
        # Created (and cached) by asyncload's Loader; a plain attribute-only
        # object, so it can take the subclass without being rebuilt.
        w.__class__ = Worker
        return w  # type: ignore[return-value]

    def __reduce__(self) -> Tuple[Any, Tuple[str]]:
        return (_rebuild_loader, (self.handle,))


def _rebuild_loader(handle: str) -> Loader:
    loader = _loader._rebuild_loader(handle)
    if not isinstance(loader, Loader):
        # An attachment made for this unpickling (or an asyncload one of
        # the same loader): the subclass only changes what it hands out.
        loader.__class__ = Loader
    return loader  # type: ignore[return-value]


def _rebuild_worker(handle: str, id: int) -> Worker:
    return _rebuild_loader(handle).get_worker_context(id)
