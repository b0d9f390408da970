"""Bad arguments raise TypeError/ValueError before anything reaches the loader."""

from __future__ import annotations

import pathlib

import pytest

import asyncload


@pytest.mark.parametrize("kwargs, exc", [
    ({"queue_depth": 0}, ValueError),
    ({"queue_depth": -1}, ValueError),
    ({"queue_depth": asyncload.MAX_QUEUE_DEPTH + 1}, ValueError),
    ({"n_workers": 0}, ValueError),
    ({"n_workers": asyncload.MAX_WORKERS + 1}, ValueError),
    ({"max_file_size": -5}, ValueError),
    ({"max_file_size": asyncload.MAX_FILE_SIZE + 1}, ValueError),
    ({"queue_depth": 4096, "n_workers": 1024}, ValueError),  # > MAX_ENTRIES
    ({"queue_depth": "8"}, TypeError),
    ({"queue_depth": 8.0}, TypeError),
    ({"n_workers": None}, TypeError),
    ({"direct": "yes"}, TypeError),
    ({"root": 5}, TypeError),
    ({"root": "a\0b"}, ValueError),
    ({"queue_depth": 2 ** 40}, ValueError),
])
def test_loader_bad_options(kwargs: dict, exc: type) -> None:
    args = {"queue_depth": 4, "max_file_size": 4096, "n_workers": 1}
    args.update(kwargs)
    with pytest.raises(exc):
        asyncload.Loader(**args)


def test_loader_keyword_and_positional_forms() -> None:
    a = asyncload.Loader(8, 1 << 16, 2, 3, 5, False)
    b = asyncload.Loader(queue_depth=8, max_file_size=1 << 16, n_workers=2,
                         dispatch_n=3, idle_iters=5, direct=False)
    try:
        for ld in (a, b):
            assert (ld.queue_depth, ld.max_file_size, ld.n_workers,
                    ld.dispatch_n, ld.idle_iters, ld.direct) == (8, 1 << 16, 2, 3, 5, False)
            assert not ld.running
        assert a.handle != b.handle
    finally:
        a.close()
        b.close()


def test_bad_worker_ids(loader: asyncload.Loader) -> None:
    with pytest.raises(ValueError):
        loader.get_worker_context(4)
    with pytest.raises(ValueError):
        loader.get_worker_context(-1)
    with pytest.raises(TypeError):
        loader.get_worker_context("0")  # type: ignore[arg-type]


@pytest.mark.parametrize("args, kwargs, exc", [
    ((123,), {}, TypeError),
    ((None,), {}, TypeError),
    ((["a"],), {}, TypeError),
    (("a\0b",), {}, ValueError),
    ((b"a\0b",), {}, ValueError),
    (("",), {}, ValueError),
    (("x",), {"offset": -1}, ValueError),
    (("x",), {"length": -1}, ValueError),
    (("x",), {"offset": 1.5}, TypeError),
    (("x",), {"length": "10"}, TypeError),
    (("x",), {"offset": 2 ** 64}, ValueError),
    (("x",), {"filepath": "y"}, TypeError),  # both names
    ((), {}, TypeError),
])
def test_request_bad_arguments(worker: asyncload.Worker, args: tuple, kwargs: dict,
                               exc: type) -> None:
    with pytest.raises(exc):
        worker.request(*args, **kwargs)
    assert worker.in_flight == 0


def test_wait_get_bad_timeout(worker: asyncload.Worker) -> None:
    with pytest.raises(ValueError):
        worker.wait_get(timeout=-1)
    with pytest.raises(ValueError):
        worker.wait_get(timeout=float("nan"))
    with pytest.raises(TypeError):
        worker.wait_get(timeout="1")  # type: ignore[arg-type]


def test_attach_bad_handles(tmp_path: pathlib.Path) -> None:
    with pytest.raises(ValueError):
        asyncload.Loader.attach("not a handle")
    with pytest.raises(ValueError):
        asyncload.Loader.attach("")
    with pytest.raises(TypeError):
        asyncload.Loader.attach(42)  # type: ignore[arg-type]


def _long_path(n: int) -> str:
    """An absolute path of exactly n bytes, in components a filesystem accepts."""
    parts, left = [], n
    while left > 0:
        k = min(200, left - 1)   # a "/" and k letters
        parts.append("/" + "d" * k)
        left -= k + 1
    path = "".join(parts)
    assert len(path) == n
    return path


def test_option_limits_are_inclusive() -> None:
    # the product may be exactly MAX_ENTRIES; one queue more per worker is refused
    qd = asyncload.MAX_ENTRIES // asyncload.MAX_WORKERS
    ld = asyncload.Loader(queue_depth=qd, max_file_size=4096, n_workers=asyncload.MAX_WORKERS)
    ld.close()
    with pytest.raises(ValueError, match=r"n_workers \* queue_depth is too large"):
        asyncload.Loader(queue_depth=qd + 1, max_file_size=4096, n_workers=asyncload.MAX_WORKERS)
    # root= may be PATH_MAX - 1 bytes (then it simply does not exist); PATH_MAX is refused
    with pytest.raises(ValueError, match=rf"root is too long \({asyncload.PATH_MAX} bytes"):
        asyncload.Loader(queue_depth=4, max_file_size=4096, n_workers=1,
                         root=_long_path(asyncload.PATH_MAX))
    try:
        asyncload.Loader(queue_depth=4, max_file_size=4096, n_workers=1,
                         root=_long_path(asyncload.PATH_MAX - 1)).close()
    except ValueError as e:
        pytest.fail(f"a root of PATH_MAX - 1 bytes was refused as an argument: {e}")
    except OSError:
        pass  # it does not exist: the loader says so, not the argument check
