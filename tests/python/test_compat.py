"""The prototype's module name and call forms (AsyncLoader) keep working."""

from __future__ import annotations

import pathlib

import AsyncLoader
import asyncload


def test_same_classes() -> None:
    assert AsyncLoader.Loader is asyncload.Loader
    assert AsyncLoader.Worker is asyncload.Worker
    assert AsyncLoader.Entry is asyncload.Entry


def test_prototype_call_forms(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "img.JPEG"
    path.write_bytes(b"\xff\xd8 not really a jpeg")
    # Loader(queue_depth, max_file_size, n_workers, dispatch_n, idle_iters, direct)
    loader = AsyncLoader.Loader(4, 1 << 16, 2, 1, 0, False)
    try:
        pid = loader.spawn_loader()
        assert isinstance(pid, int) and pid > 0
        w = loader.get_worker_context(id=1)
        assert w.request(filepath=str(path)) is True
        e = w.wait_get()
        assert e.get_filepath() == str(path)
        assert e.get_data() == path.read_bytes()
        e.release()
    finally:
        loader.shutdown()
        loader.close()
