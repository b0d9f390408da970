"""AsyncLoader: the 2023 prototype's module name, kept so its programs run unchanged.

Both of the prototype's call forms work, by position or by keyword:

    # the released code's form
    loader = AsyncLoader.Loader(queue_depth, n_workers, dispatch_n, max_idle_iters,
                                direct=False)
    # the README's form
    loader = AsyncLoader.Loader(queue_depth, max_file_size, n_workers,
                                dispatch_n, idle_iters, direct)
    multiprocessing.Process(target=loader.become_loader).start()   # or spawn_loader()
    w = loader.get_worker_context(id=0)
    w.request(filepath=b"x.JPEG"); e = w.wait_get()
    e.get_filepath()   # bytes, as the prototype returned
    e.get_data(); e.release()

The classes subclass asyncload's (see asyncload._compat for the rule that
tells the two forms apart); new code should ``import asyncload``.
"""

from __future__ import annotations

from asyncload import LoadError, LoaderClosedError
from asyncload._compat import Entry, Loader, Worker, default_max_file_size

__all__ = ["Loader", "Worker", "Entry", "LoadError", "LoaderClosedError",
           "default_max_file_size"]
