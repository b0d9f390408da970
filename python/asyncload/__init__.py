"""asyncload: zero-copy file loading for ML input pipelines.

A loader process reads files with io_uring into shared memory; worker
processes request files by path and read the bytes without a copy. See
README.md for a tour; docs/design.md maps the files.

    with asyncload.Loader(queue_depth=64, max_file_size=1 << 24, n_workers=4) as loader:
        w = loader.get_worker_context(0)
        for entry in w.load(paths):
            with entry:
                consume(entry.data)
"""

from __future__ import annotations

from ._entry import Entry
from ._fill import LoadRequest
from ._loader import Loader
from ._worker import Worker
from ._lowlevel import LoadError, LoaderClosedError, lib as _lib

__all__ = [
    "Loader",
    "Worker",
    "Entry",
    "LoadError",
    "LoaderClosedError",
    "LoadRequest",
    "MAX_WORKERS",
    "MAX_QUEUE_DEPTH",
    "MAX_ENTRIES",
    "MAX_FILE_SIZE",
    "PATH_MAX",
    "__version__",
]

__version__ = f"{_lib.ASYNCLOAD_VERSION_MAJOR}.{_lib.ASYNCLOAD_VERSION_MINOR}.0"

# Limits checked by Loader(); exported so callers can size things up front.
MAX_WORKERS: int = _lib.ASYNCLOAD_MAX_WORKERS
MAX_QUEUE_DEPTH: int = _lib.ASYNCLOAD_MAX_QUEUE_DEPTH
MAX_ENTRIES: int = _lib.ASYNCLOAD_MAX_ENTRIES
MAX_FILE_SIZE: int = _lib.ASYNCLOAD_MAX_FILE_SIZE
PATH_MAX: int = _lib.ASYNCLOAD_PATH_MAX

