"""AsyncLoader: the 2023 prototype's module name, kept for old code.

The classes are the very same objects as in ``asyncload``, so the
prototype's call forms keep working:

    loader = AsyncLoader.Loader(queue_depth, max_file_size, n_workers,
                                dispatch_n, idle_iters, direct)
    loader.spawn_loader()
    w = loader.get_worker_context(id=0)
    w.request(filepath="x.JPEG"); e = w.wait_get()
    e.get_filepath(); e.get_data(); e.release()

New code should ``import asyncload``.
"""

from __future__ import annotations

from asyncload import Entry, LoadError, Loader, LoaderClosedError, Worker

__all__ = ["Loader", "Worker", "Entry", "LoadError", "LoaderClosedError"]
