"""Behaviours that every other test would let break unnoticed, seen from the
Python API: a completion wakes its waiter at once, close() wakes an idle
loader at once, direct=True falls back where O_DIRECT is refused, a loader
that dies while stopping raises LoaderClosedError within a second, and an
idle wait_get sleeps rather than polls. Timings are compared with wide
margins (best or median of several tries) against what the broken code
would take, so a busy shared machine does not fail them."""

from __future__ import annotations

import os
import signal
import statistics
import tempfile
import threading
import time
from typing import Iterator

import pytest

import asyncload
from asyncload import LoaderClosedError


@pytest.fixture
def disk_dir() -> Iterator[str]:
    """A directory on a real disk (O_DIRECT works there), not tmpfs."""
    with tempfile.TemporaryDirectory(dir=os.environ.get("ASYNCLOAD_TEST_DIR", "/var/tmp")) as d:
        yield d


def _small_file(d: str, size: int = 4096) -> str:
    path = os.path.join(d, "small")
    with open(path, "wb") as f:
        f.write(os.urandom(size))
    return path


def test_completion_wakes_waiter(disk_dir: str) -> None:
    # 50 round trips take milliseconds; a waiter left to its own 100 ms
    # wake-up would need about 5 s.
    path = _small_file(disk_dir)
    with asyncload.Loader(4, 1 << 20, 1) as loader:
        w = loader.get_worker_context(0)
        best = float("inf")
        for _ in range(3):
            t0 = time.monotonic()
            for _ in range(50):
                assert w.request(path)
                with w.wait_get(timeout=10) as e:
                    assert e.error == 0 and e.size == 4096
            best = min(best, time.monotonic() - t0)
            if best < 1.0:
                break
        assert best < 1.0, f"50 request/wait round trips took {best:.2f} s"


def _close_time(path: str) -> float:
    loader = asyncload.Loader(4, 1 << 20, 2, n_threads=2)
    loader.spawn_loader()
    for wid in range(2):
        w = loader.get_worker_context(wid)
        assert w.request(path)
        with w.wait_get(timeout=10) as e:
            assert e.error == 0
        w.close()
    time.sleep(0.01)  # the loader settles into its 200 ms idle sleep
    t0 = time.monotonic()
    loader.close()
    return time.monotonic() - t0


def test_close_wakes_idle_loader(disk_dir: str) -> None:
    path = _small_file(disk_dir, 100)
    times = [_close_time(path) for _ in range(5)]
    assert statistics.median(times) < 0.08, f"close() of an idle loader took {times}"


@pytest.mark.parametrize("root,path", [
    (None, "/proc/self/status"),
    ("/proc", "self/status"),
    ("/proc", "/proc/self/status"),
])
def test_direct_falls_back_where_refused(root: str, path: str) -> None:
    # procfs refuses O_DIRECT; the loader reads its own status buffered.
    with asyncload.Loader(4, 1 << 20, 1, direct=True, root=root) as loader:
        w = loader.get_worker_context(0)
        assert w.request(path)
        with w.wait_get(timeout=10) as e:
            assert e.error == 0, f"{path}: {os.strerror(e.error)}"
            data = e.get_data()
    assert data.startswith(b"Name:") and b"\nPid:" in data and data.endswith(b"\n")


def test_direct_falls_back_on_tmpfs() -> None:
    assert os.path.ismount("/dev/shm"), "the test needs the usual tmpfs on /dev/shm"
    with tempfile.TemporaryDirectory(dir="/dev/shm") as d:
        data = os.urandom(10001)
        path = os.path.join(d, "f")
        with open(path, "wb") as f:
            f.write(data)
        for root, name in ((None, path), (d, "f"), (d, path)):
            with asyncload.Loader(4, 1 << 20, 1, direct=True, root=root) as loader:
                w = loader.get_worker_context(0)
                assert w.request(name)
                assert w.request(name, offset=4097, length=3000)
                got = {}
                for _ in range(2):
                    with w.wait_get(timeout=10) as e:
                        assert e.error == 0
                        got[e.offset] = e.get_data()
                assert got == {0: data, 4097: data[4097:7097]}


def test_loader_death_while_stopping_raises_soon(disk_dir: str) -> None:
    # Large cold O_DIRECT reads keep the loader stopping after shutdown();
    # it is frozen as soon as it no longer runs, then killed.
    size = 32 << 20
    paths = []
    for i in range(4):
        p = os.path.join(disk_dir, f"big{i}")
        with open(p, "wb") as f:
            f.write(os.urandom(1 << 20) * 32)
            f.flush()
            os.fsync(f.fileno())
            os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
        paths.append(p)
    for _attempt in range(3):
        loader = asyncload.Loader(4, size, 1, direct=True)
        try:
            pid = loader.spawn_loader()
            w = loader.get_worker_context(0)
            for p in paths:
                assert w.request(p)
            time.sleep(0.002)
            loader.shutdown()
            deadline = time.monotonic() + 2
            while loader.running and time.monotonic() < deadline:
                pass
            os.kill(pid, signal.SIGSTOP)
            caught = True
            try:
                while (e := w.try_get()) is not None:
                    e.release()
            except LoaderClosedError:
                caught = False  # it had finished: nothing was left in flight
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            if not caught:
                continue
            t0 = time.monotonic()
            with pytest.raises(LoaderClosedError):
                while True:
                    w.wait_get(timeout=5).release()
            assert time.monotonic() - t0 < 1.0
            return
        finally:
            loader.close()
    pytest.fail("the loader finished its reads before it could be frozen, 3 times")


def _voluntary_switches(tid: int) -> int:
    with open(f"/proc/self/task/{tid}/status") as f:
        for line in f:
            if line.startswith("voluntary_ctxt_switches:"):
                return int(line.split()[1])
    raise AssertionError("no voluntary_ctxt_switches")


def test_idle_wait_get_sleeps(worker: asyncload.Worker) -> None:
    tid = threading.get_native_id()
    before = _voluntary_switches(tid)
    t0 = time.monotonic()
    with pytest.raises(TimeoutError):
        worker.wait_get(timeout=1.0)
    elapsed = time.monotonic() - t0
    n = _voluntary_switches(tid) - before
    assert n / elapsed < 60, f"an idle wait_get switched {n} times in {elapsed:.2f} s"
