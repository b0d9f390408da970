"""Tests of tools/slowfs (the slow FUSE filesystem that stands in for network storage),
and of asyncload reading through it: short reads must not be taken for the end of a file.
"""

from __future__ import annotations

import errno
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Dict, List

import pytest

import asyncload
from al_testutil import load_and_check, make_files
from slowfs import SlowFS, is_mounted


def in_mount(fs: SlowFS, files: Dict[str, bytes]) -> Dict[str, bytes]:
    return {fs.path(os.path.basename(p)): data for p, data in files.items()}


def read_all(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def test_mirror_is_byte_identical_and_read_only(files: Dict[str, bytes], slowfs: SlowFS) -> None:
    assert sorted(os.listdir(slowfs.mountpoint)) == sorted(os.path.basename(p) for p in files)
    for path, data in in_mount(slowfs, files).items():
        assert read_all(path) == data, path
        assert os.stat(path).st_size == len(data)
    some = slowfs.path(os.path.basename(next(iter(files))))
    with pytest.raises(OSError) as ei:
        open(some, "r+b")
    assert ei.value.errno in (errno.EROFS, errno.EACCES)


def test_latency_is_applied(files: Dict[str, bytes],
                            slowfs_factory: Callable[..., SlowFS]) -> None:
    latency = 0.05
    fs = slowfs_factory(os.path.dirname(next(iter(files))), latency_ms=latency * 1000)
    name = sorted(os.path.basename(p) for p, d in files.items() if len(d) > 10000)[0]
    t0 = time.perf_counter()
    fd = os.open(fs.path(name), os.O_RDONLY)    # a lookup, then an open: two sleeps
    t1 = time.perf_counter()
    try:
        assert os.read(fd, 4096)                # nothing cached: a read request
    finally:
        os.close(fd)
    t2 = time.perf_counter()
    assert 2 * latency * 0.9 <= t1 - t0 < 2.0
    assert latency * 0.9 <= t2 - t1 < 2.0
    st = fs.stats(settle=True)
    assert st["open"] >= 1 and st["read"] >= 1 and st["getattr"] >= 1


def test_requests_overlap_beyond_libfuse_default_threads(
        files: Dict[str, bytes], slowfs_factory: Callable[..., SlowFS]) -> None:
    # libfuse's default loop runs at most 10 threads: 100 opens of 0.1 s each would take
    # >= 1 s (10 rounds); with the cap raised they overlap into ~0.1-0.3 s. One file, so
    # that one lookup serves all (the kernel serialises lookups within a directory)
    fs = slowfs_factory(os.path.dirname(next(iter(files))), latency_ms=100)
    path = fs.path("f0003.bin")
    n = 100
    with ThreadPoolExecutor(n) as ex:
        list(ex.map(abs, range(n)))    # threads up before the clock
        os.stat(path)                  # the dentry stays valid for 1 s
        t0 = time.perf_counter()
        fds = list(ex.map(lambda _: os.open(path, os.O_RDONLY), range(n)))
        wall = time.perf_counter() - t0
    for fd in fds:
        os.close(fd)
    assert fs.stats(settle=True)["open"] == n
    assert wall < 0.8, f"{n} concurrent opens took {wall:.2f} s: the daemon serialises"


def test_eio_on_chosen_files(files: Dict[str, bytes],
                             slowfs_factory: Callable[..., SlowFS]) -> None:
    fs = slowfs_factory(os.path.dirname(next(iter(files))), eio_open="f0005.bin",
                        eio_read=["nomatch*", "f0006.bin"])
    with pytest.raises(OSError) as ei:
        open(fs.path("f0005.bin"), "rb")
    assert ei.value.errno == errno.EIO
    with open(fs.path("f0006.bin"), "rb") as f:    # opens; its reads fail
        with pytest.raises(OSError) as ei:
            f.read()
    assert ei.value.errno == errno.EIO
    for p, data in in_mount(fs, files).items():
        if not p.endswith(("f0005.bin", "f0006.bin")):
            assert read_all(p) == data
    # the kernel retries a page read that failed in readahead: 2 or more read EIOs
    assert fs.stats(settle=True)["eio"] >= 2


def test_stall_blocks_until_released(files: Dict[str, bytes],
                                     slowfs_factory: Callable[..., SlowFS]) -> None:
    fs = slowfs_factory(os.path.dirname(next(iter(files))), latency_ms=1, stall="f0007.bin")
    expected = in_mount(fs, files)
    got: List[bytes] = []
    t = threading.Thread(target=lambda: got.append(read_all(fs.path("f0007.bin"))))
    t.start()
    fs.wait_stalled(1)
    # the others keep flowing while one open hangs
    for p, data in expected.items():
        if not p.endswith("f0007.bin"):
            assert read_all(p) == data
    t.join(0.3)
    assert t.is_alive() and not got
    fs.release()
    t.join(2.0)
    assert not t.is_alive() and got == [expected[fs.path("f0007.bin")]]
    # re-armed: the next open waits again
    fs.rearm()
    t = threading.Thread(target=lambda: got.append(read_all(fs.path("f0007.bin"))))
    t.start()
    fs.wait_stalled(1)
    fs.release()
    t.join(2.0)
    assert not t.is_alive() and len(got) == 2
    assert fs.stats(settle=True)["stalls"] == 2


def test_short_reads(tmp_path: "os.PathLike[str]", slowfs_factory: Callable[..., SlowFS]) -> None:
    src = os.path.join(str(tmp_path), "big")
    os.makedirs(src)
    data = os.urandom(100_000)
    with open(os.path.join(src, "a.bin"), "wb") as f:
        f.write(data)
    fs = slowfs_factory(src, max_answer=3000)
    fd = os.open(fs.path("a.bin"), os.O_RDONLY)
    try:
        first = os.read(fd, len(data))
        assert len(first) == 3000       # short, though the whole file was asked for
        chunks = [first]
        while True:
            c = os.read(fd, len(data))
            assert len(c) <= 3000
            if not c:
                break
            chunks.append(c)
    finally:
        os.close(fd)
    assert b"".join(chunks) == data
    assert len(chunks) == -(-len(data) // 3000)


def test_killed_daemon_fails_requests_and_is_cleaned_up(
        files: Dict[str, bytes], slowfs_factory: Callable[..., SlowFS]) -> None:
    fs = slowfs_factory(os.path.dirname(next(iter(files))))
    fs.kill_daemon()
    with pytest.raises(OSError) as ei:
        open(fs.path("f0003.bin"), "rb")
    assert ei.value.errno in (errno.ENOTCONN, errno.ECONNABORTED)
    fs.stop()
    assert not is_mounted(fs.mountpoint)


@pytest.mark.parametrize("direct", [False, True])
def test_asyncload_loops_on_short_reads(tmp_path: "os.PathLike[str]", direct: bool,
                                        slowfs_factory: Callable[..., SlowFS]) -> None:
    """A short read before EOF is not the end of the file: every byte of ~100 kB files
    read through 3,000-byte answers, byte-exact."""
    src = os.path.join(str(tmp_path), "short")
    os.makedirs(src)
    expected_src: Dict[str, bytes] = {}
    for i, size in enumerate((100_000, 99_999, 100_001, 131_072, 3000, 2999, 1, 0)):
        p = os.path.join(src, f"s{i}.bin")
        expected_src[p] = os.urandom(size)
        with open(p, "wb") as f:
            f.write(expected_src[p])
    fs = slowfs_factory(src, max_answer=3000)
    expected = in_mount(fs, expected_src)
    with asyncload.Loader(queue_depth=4, max_file_size=1 << 20, n_workers=1, direct=direct) as ld:
        assert load_and_check(ld.get_worker_context(0), expected) == []
    # the answers really were short: one read request per 3,000 bytes at least
    assert fs.stats(settle=True)["read"] >= sum(-(-len(d) // 3000) for d in expected.values())


def test_cached_open_finds_the_mount_on_a_path_component_boundary(
        tmp_path: "os.PathLike[str]", slowfs: SlowFS) -> None:
    """With a mount that may block present (slowfs), an open the kernel can answer from
    its caches resolves beneath the root of the file's own mount. .../ab/f.bin is not
    on a mount at .../a: taken to be, it would be opened as b/f.bin beneath that
    mount's root, and a file that is there (the decoy) answered in its place."""
    import subprocess
    base = os.path.join(str(tmp_path), "prefix")
    os.makedirs(os.path.join(base, "a"))
    os.makedirs(os.path.join(base, "ab"))
    mnt = os.path.join(base, "a")
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "al-prefix-test", mnt],
                         capture_output=True, text=True)
    assert res.returncode == 0, f"mounting a tmpfs (needs root, as CI runs): {res.stderr}"
    try:
        os.makedirs(os.path.join(mnt, "b"))
        with open(os.path.join(mnt, "b", "f.bin"), "wb") as f:
            f.write(b"decoy" * 1000)
        real = {os.path.join(base, "ab", "f.bin"): os.urandom(5000)}
        for p, data in real.items():
            with open(p, "wb") as f:
                f.write(data)
            os.stat(p)  # in the dentry cache: the loader's cached open applies
        with asyncload.Loader(queue_depth=2, max_file_size=1 << 20, n_workers=1) as ld:
            assert load_and_check(ld.get_worker_context(0), real) == []
    finally:
        if subprocess.run(["umount", mnt], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", mnt], capture_output=True)


def test_direct_read_refused_after_the_open_falls_back_to_buffered(
        tmp_path: "os.PathLike[str]", slowfs_factory: Callable[..., SlowFS]) -> None:
    """A filesystem may accept O_DIRECT at open and refuse the read (EINVAL: an alignment
    larger than the loader's): direct=True then reads the file buffered, byte-exact."""
    src = os.path.join(str(tmp_path), "einval")
    os.makedirs(src)
    expected_src: Dict[str, bytes] = {}
    for i, size in enumerate((100_000, 4096, 1)):
        p = os.path.join(src, f"e{i}.bin")
        expected_src[p] = os.urandom(size)
        with open(p, "wb") as f:
            f.write(expected_src[p])
    fs = slowfs_factory(src, einval_direct="e*.bin")
    expected = in_mount(fs, expected_src)
    some = next(iter(expected))
    fd = os.open(some, os.O_RDONLY | os.O_DIRECT)   # the fixture does what it says
    try:
        with pytest.raises(OSError) as ei:
            os.read(fd, 4096)
        assert ei.value.errno == errno.EINVAL
    finally:
        os.close(fd)
    with asyncload.Loader(queue_depth=4, max_file_size=1 << 20, n_workers=1, direct=True) as ld:
        assert load_and_check(ld.get_worker_context(0), expected) == []
    assert fs.stats(settle=True)["read"] >= len(expected)
