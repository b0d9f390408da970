"""Thin layer over the compiled cffi module: errors and argument conversion.

Every C call returns 0/a count or a negative errno; ``check_error`` turns the
negative ones into the Python exceptions the README lists, so the
classes never interpret errno values themselves.
"""

from __future__ import annotations

import errno as _errno
import os
import re
from typing import Any, Optional, Union

from ._asyncload import ffi, lib

__all__ = [
    "ffi",
    "lib",
    "LoadError",
    "LoaderClosedError",
    "check_error",
    "strerror",
    "encode_path",
    "PathArg",
]

PathArg = Union[str, bytes, "os.PathLike[str]", "os.PathLike[bytes]"]


class LoadError(OSError):
    """One requested file could not be loaded.

    Raised by ``Entry.get_data()`` and ``Entry.data`` for a failed entry;
    ``errno`` says why (ENOENT, EISDIR, EINVAL for a FIFO/socket/device,
    EFBIG, EACCES, EXDEV outside ``root``, ESHUTDOWN ...) and ``filename`` is
    the path as requested.

    Across a DataLoader worker, PyTorch re-raises an exception as
    ``type(msg)`` with the formatted traceback as the one argument; the
    errno and the path are read back from its last ``[Errno N] ...: 'path'``
    so that the main process still sees ``errno`` and ``filename``.
    """

    def __init__(self, *args: Any) -> None:
        if len(args) == 1 and isinstance(args[0], str):
            found = _ERRNO_LINE.findall(args[0])
            if found:
                num, text, path = found[-1]
                super().__init__(int(num), text, path)
                self._message = args[0]
                return
        super().__init__(*args)

    def __str__(self) -> str:
        return getattr(self, "_message", None) or super().__str__()


_ERRNO_LINE = re.compile(r"\[Errno (\d+)\] ([^\n]*?): '([^\n]*)'")


class LoaderClosedError(BrokenPipeError):
    """The loader was shut down, died, or this handle was closed.

    A BrokenPipeError (so an OSError) with errno ESHUTDOWN: like a pipe whose
    reader went away, nothing more will come through.
    """

    def __init__(self, msg: str = "loader is shut down") -> None:
        super().__init__(_errno.ESHUTDOWN, msg)

    def __reduce__(self) -> tuple:
        # OSError pickles as cls(errno, strerror), which this __init__ does not
        # take: rebuild from the message so the exception crosses processes.
        return (type(self), (self.strerror,))


def strerror(err: int) -> str:
    """Message for a (positive or negative) errno, from the library."""
    return ffi.string(lib.asyncload_strerror(-abs(err))).decode("utf-8", "replace")


def check_error(rc: int, filename: Optional[str] = None) -> int:
    """Return ``rc`` if it is not negative, else raise the matching exception.

    -ESHUTDOWN becomes LoaderClosedError, -EINVAL ValueError (the library
    only returns it for arguments it rejects) and anything else the OSError
    subclass that Python picks for the errno (TimeoutError, FileNotFoundError,
    BlockingIOError ...).
    """
    if rc >= 0:
        return rc
    err = -rc
    msg = strerror(err)
    if err == _errno.ESHUTDOWN:
        raise LoaderClosedError(msg)
    if err == _errno.EINVAL:
        raise ValueError(msg if filename is None else f"{msg}: {filename!r}")
    if filename is None:
        raise OSError(err, msg)
    raise OSError(err, msg, filename)


def encode_path(path: PathArg) -> bytes:
    """The bytes the C library gets for a str, bytes or os.PathLike path.

    Uses the filesystem encoding (surrogateescape) so that any name returned
    by os.listdir round-trips; embedded NULs would silently truncate the
    path in C, so they are refused here.
    """
    if isinstance(path, (str, bytes)) or hasattr(path, "__fspath__"):
        raw = os.fsencode(path)
    else:
        raise TypeError(
            f"path must be str, bytes or os.PathLike, not {type(path).__name__}"
        )
    if b"\0" in raw:
        raise ValueError("embedded null byte in path")
    if not raw:
        raise ValueError("empty path")
    return raw
