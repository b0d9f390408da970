"""pytest setup for the asyncload Python tests: per-test deadlines and fixtures.

Every test runs under a SIGALRM deadline (a failing test, not a hang) and a
faulthandler backstop that kills the run with tracebacks if even the alarm
cannot get through (e.g. stuck inside C without returning to Python).
"""

from __future__ import annotations

import faulthandler
import os
import signal
import sys
from typing import Any, Callable, Dict, Iterator, List

import pytest

sys.path.insert(0, os.path.dirname(__file__))

import asyncload  # noqa: E402
from al_testutil import make_files  # noqa: E402
from slowfs import SlowFS  # noqa: E402

DEFAULT_DEADLINE_S = 30


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "deadline(seconds): per-test time limit")


@pytest.fixture(autouse=True)
def _deadline(request: pytest.FixtureRequest) -> Iterator[None]:
    marker = request.node.get_closest_marker("deadline")
    limit = int(marker.args[0]) if marker else DEFAULT_DEADLINE_S

    def on_alarm(signum: int, frame: object) -> None:
        pytest.fail(f"test exceeded its {limit} s deadline", pytrace=True)

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(limit)
    faulthandler.dump_traceback_later(limit + 20, exit=True)
    try:
        yield
    finally:
        signal.alarm(0)
        faulthandler.cancel_dump_traceback_later()
        signal.signal(signal.SIGALRM, old)


@pytest.fixture
def files(tmp_path: "os.PathLike[str]") -> Dict[str, bytes]:
    """40 files of varied sizes (0 .. 200 kB): path -> content."""
    return make_files(str(tmp_path / "data"), 40, seed=1)


@pytest.fixture
def loader() -> Iterator[asyncload.Loader]:
    """A running loader: 4 workers x 8 entries of up to 1 MiB."""
    with asyncload.Loader(queue_depth=8, max_file_size=1 << 20, n_workers=4) as ld:
        yield ld


@pytest.fixture
def worker(loader: asyncload.Loader) -> asyncload.Worker:
    return loader.get_worker_context(0)


@pytest.fixture
def slowfs_factory(tmp_path: "os.PathLike[str]") -> Iterator[Callable[..., SlowFS]]:
    """make(source, **SlowFS options) -> a mounted SlowFS; every mount is unmounted and
    its daemon ended after the test, pass or fail (see tests/python/slowfs.py)."""
    mounts: List[SlowFS] = []

    def make(source: str, **opts: Any) -> SlowFS:
        fs = SlowFS(source, os.path.join(str(tmp_path), f"slowfs-mnt{len(mounts)}"), **opts)
        mounts.append(fs)
        return fs.start()

    yield make
    errors = []
    for fs in reversed(mounts):
        try:
            fs.stop()
        except Exception as e:  # stop the others too, then fail
            errors.append(e)
    if errors:
        raise errors[0]


@pytest.fixture
def slowfs(files: Dict[str, bytes], slowfs_factory: Callable[..., SlowFS]) -> SlowFS:
    """The `files` folder mirrored through slowfs at 1 ms per operation; fs.path(name)
    is a file's path in the mount."""
    return slowfs_factory(os.path.dirname(next(iter(files))), latency_ms=1)
