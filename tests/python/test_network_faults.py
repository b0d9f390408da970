"""Network storage faults, on the slow FUSE filesystem (tools/slowfs.c), on both engines.

The loop must never wait on storage: one stalled open holds up only itself (the
loader's loop thread is never caught in a FUSE wait), EIO is per file, a daemon that
dies answers every request with its error, and a stop with a stalled request still
reaches every worker within a second, with nothing left once the stall ends.
"""

from __future__ import annotations

import errno
import multiprocessing
import os
import time
from typing import Callable, Dict, List, Optional

import pytest

import asyncload
from al_testutil import children_of, engines_here
from slowfs import SlowFS

ENGINES = engines_here()
FUSE_WAITS = ("request_wait_answer", "fuse_")


def _tree(root: str, n: int, size: int = 20_000) -> Dict[str, bytes]:
    os.makedirs(root, exist_ok=True)
    out = {}
    for i in range(n):
        p = os.path.join(root, f"f{i:03d}.bin")
        out[p] = os.urandom(size)
        with open(p, "wb") as f:
            f.write(out[p])
    return out


def _loop_thread_wchan(pid: int) -> str:
    """wchan of the loader's loop thread (its main thread: one loader thread here)."""
    with open(f"/proc/{pid}/task/{pid}/wchan") as f:
        return f.read()


def _in_mount(fs: SlowFS, files: Dict[str, bytes]) -> Dict[str, bytes]:
    return {fs.path(os.path.basename(p)): d for p, d in files.items()}


@pytest.mark.deadline(60)
@pytest.mark.parametrize("engine", ENGINES)
# mountinfo types a FUSE mount "fuse", or "fuse.NAME" where the daemon names a
# subtype (sshfs, s3fs and most others do): both must count as mounts that may block
@pytest.mark.parametrize("subtype", [None, "slowfs"], ids=["fuse", "fuse.slowfs"])
def test_one_stalled_open_holds_up_nothing_else(tmp_path: "os.PathLike[str]", engine: str,
                                                subtype: Optional[str],
                                                slowfs_factory: Callable[..., SlowFS]) -> None:
    files = _tree(os.path.join(str(tmp_path), "src"), 300)
    fs = slowfs_factory(os.path.join(str(tmp_path), "src"), latency_ms=1, stall="f000.bin",
                        extra_args=("-o", f"subtype={subtype}") if subtype else ())
    with open("/proc/self/mountinfo") as f:
        types = [line.split(" - ")[1].split()[0] for line in f if f" {fs.mountpoint} " in line]
    assert types == ["fuse." + subtype if subtype else "fuse"], types
    expected = _in_mount(fs, files)
    stalled = fs.path("f000.bin")
    with asyncload.Loader(queue_depth=64, max_file_size=1 << 20, n_workers=1, n_threads=1,
                          engine=engine) as ld:
        w = ld.get_worker_context(0)
        assert w.request(stalled, tag=1 << 40)
        fs.wait_stalled(1)
        others = [p for p in expected if p != stalled]
        t0 = time.monotonic()
        got = 0
        for e in w.load(others, timeout=20):
            with e:
                assert e.tag < len(others) and bytes(e.data) == expected[others[e.tag]]
                got += 1
            # while the open hangs, the loop is not the thread waiting on FUSE
            wchan = _loop_thread_wchan(ld.pid)
            assert not wchan.startswith(FUSE_WAITS), wchan
        took = time.monotonic() - t0
        assert got == len(others)
        assert took < 10, f"{got} files took {took:.1f} s beside one stalled open"
        assert w.in_flight == 1  # the stalled one, still out
        fs.release()
        e = w.wait_get(timeout=10)
        with e:
            assert e.tag == 1 << 40 and bytes(e.data) == expected[stalled]


@pytest.mark.deadline(60)
@pytest.mark.parametrize("engine", ENGINES)
def test_stop_with_a_stalled_request_reaches_workers_within_a_second(
        tmp_path: "os.PathLike[str]", engine: str, slowfs_factory: Callable[..., SlowFS]) -> None:
    _tree(os.path.join(str(tmp_path), "src"), 4)
    fs = slowfs_factory(os.path.join(str(tmp_path), "src"), latency_ms=1, stall="f000.bin")
    ld = asyncload.Loader(queue_depth=8, max_file_size=1 << 20, n_workers=1, engine=engine)
    ld.spawn_loader()
    pid = ld.pid
    w = ld.get_worker_context(0)
    assert w.request(fs.path("f000.bin"))
    fs.wait_stalled(1)
    t0 = time.monotonic()
    ld.shutdown()
    e = w.wait_get(timeout=5)
    took = time.monotonic() - t0
    assert e.error == errno.ESHUTDOWN and took < 1.0, (e.error, took)
    e.release()
    with pytest.raises(asyncload.LoaderClosedError):
        w.wait_get(timeout=2)
    # once the stall ends nothing is left: no loader process, no files open in the mount
    fs.release()
    ld.close()
    assert pid not in [c for c, _ in children_of(os.getpid())]
    assert not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z"


@pytest.mark.deadline(60)
@pytest.mark.parametrize("engine", ENGINES)
def test_eio_on_chosen_files_only(tmp_path: "os.PathLike[str]", engine: str,
                                  slowfs_factory: Callable[..., SlowFS]) -> None:
    files = _tree(os.path.join(str(tmp_path), "src"), 60)
    fs = slowfs_factory(os.path.join(str(tmp_path), "src"), latency_ms=0.5,
                        eio_open="f00*.bin", eio_read="f01*.bin")
    expected = _in_mount(fs, files)
    paths = sorted(expected)
    with asyncload.Loader(queue_depth=32, max_file_size=1 << 20, n_workers=1, engine=engine) as ld:
        errors: Dict[str, int] = {}
        for e in ld.get_worker_context(0).load(paths, timeout=20):
            with e:
                p = paths[e.tag]
                if e.ok:
                    assert bytes(e.data) == expected[p]
                else:
                    errors[os.path.basename(p)] = e.error
    assert errors == {f"f{i:03d}.bin": errno.EIO for i in range(20)}


def _stall_and_die(worker: asyncload.Worker, path: str) -> None:
    worker.request(path)
    time.sleep(60)


@pytest.mark.deadline(90)
@pytest.mark.parametrize("engine", ENGINES)
def test_daemon_killed_and_worker_death_with_a_stalled_request(
        tmp_path: "os.PathLike[str]", engine: str, slowfs_factory: Callable[..., SlowFS]) -> None:
    """A worker dies with a stalled request out: the loader keeps serving; then the
    daemon dies mid-load: every request is answered with an error, nothing hangs, and
    the loader still serves files elsewhere."""
    files = _tree(os.path.join(str(tmp_path), "src"), 200)
    local = _tree(os.path.join(str(tmp_path), "local"), 5)
    fs = slowfs_factory(os.path.join(str(tmp_path), "src"), latency_ms=2, stall="f000.bin")
    expected = _in_mount(fs, files)
    paths = sorted(expected)[1:]
    with asyncload.Loader(queue_depth=64, max_file_size=1 << 20, n_workers=2, engine=engine) as ld:
        ctx = multiprocessing.get_context("fork")
        child = ctx.Process(target=_stall_and_die, args=(ld.get_worker_context(1), fs.path("f000.bin")))
        child.start()
        fs.wait_stalled(1)
        child.kill()
        child.join()
        w = ld.get_worker_context(0)
        answered: List[int] = []
        t0 = time.monotonic()
        for e in w.load(paths, timeout=30):
            with e:
                answered.append(e.error)
                if len(answered) == 50:
                    fs.kill_daemon()
        assert len(answered) == len(paths)
        assert answered[:50].count(0) == 50
        assert all(err in (0, errno.ENOTCONN, errno.ECONNABORTED, errno.EIO, errno.ENOENT)
                   for err in answered), set(answered)
        assert any(err != 0 for err in answered)
        assert time.monotonic() - t0 < 20
        # the loader still serves other storage
        local_paths = sorted(local)
        for e in w.load(local_paths, timeout=10):
            with e:
                assert bytes(e.data) == local[local_paths[e.tag]]
