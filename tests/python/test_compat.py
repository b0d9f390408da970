"""Programs written against the 2023 prototype (module AsyncLoader) run unchanged.

Written the way those programs were: both of its Loader forms, by keyword
and by position, bytes paths, ``request(filepath=...)`` until it says
False, the loader run as ``multiprocessing.Process(target=loader.become_loader)``
and ended with ``kill()``, the next Loader made in the same process, queue
depths from 4 to 8192. Every byte is compared with the file on disk.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import pathlib
import pickle
import time
from typing import Any, Dict, List

import pytest
from al_testutil import children_of, fd_count, make_files, memfd_mappings

import AsyncLoader
import asyncload

FORK = multiprocessing.get_context("fork")


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Dict[bytes, bytes]:
    """bytes path -> content: varied sizes, one 3 MiB file, one path over 128 bytes."""
    root = tmp_path_factory.mktemp("compat")
    out = {os.fsencode(p): d for p, d in make_files(str(root), 30).items()}
    big = root / "big.bin"
    big.write_bytes(os.urandom(3 << 20))
    out[os.fsencode(big)] = big.read_bytes()
    deep = root / ("d" * 100) / ("long-name-" * 12 + ".JPEG")
    deep.parent.mkdir()
    deep.write_bytes(b"\xff\xd8" + os.urandom(5000))
    assert len(os.fsencode(deep)) > 128  # the prototype's path limit
    out[os.fsencode(deep)] = deep.read_bytes()
    return out


def prototype_load(w: Any, files: Dict[bytes, bytes], paths: List[bytes]) -> int:
    """Load ``paths`` as prototype programs did; assert every byte; return loads."""
    todo = list(paths)
    in_flight = done = 0
    while todo or in_flight:
        while todo and w.request(filepath=todo[-1]):
            todo.pop()
            in_flight += 1
        e = w.wait_get()
        path = e.get_filepath()
        assert isinstance(path, bytes)
        assert e.get_data() == files[path], path.decode()
        e.release()
        in_flight -= 1
        done += 1
    return done


# ---------------------------------------------------------------- call forms

M = 1 << 22
FORMS = [
    # (args, kwargs, expected (queue_depth, max_file_size or None for the
    # default, n_workers, dispatch_n, idle_iters, direct))
    ((8, 2, 1, 0), {}, (8, None, 2, 1, 0, False)),
    ((8, 2, 4, 100, False), {}, (8, None, 2, 4, 100, False)),
    ((8, 2, 1, 10**6), {}, (8, None, 2, 1, 20000, False)),  # spins: clamped
    ((8, 2, 1, 0), {"direct": False}, (8, None, 2, 1, 0, False)),
    ((), dict(queue_depth=8, n_workers=2, dispatch_n=1, max_idle_iters=0),
     (8, None, 2, 1, 0, False)),
    ((8,), dict(n_workers=2, dispatch_n=1, max_idle_iters=0, max_file_size=M),
     (8, M, 2, 1, 0, False)),
    ((8, M, 2, 1, 0, False), {}, (8, M, 2, 1, 0, False)),
    ((8, M, 2, 3, 5), dict(direct=False), (8, M, 2, 3, 5, False)),
    ((8, M, 2), {}, (8, M, 2, 1, 0, False)),
    ((8,), dict(max_file_size=M, n_workers=2, dispatch_n=1, idle_iters=0), (8, M, 2, 1, 0, False)),
    ((), dict(queue_depth=8, n_workers=2), (8, None, 2, 1, 0, False)),
]


@pytest.mark.parametrize("args,kwargs,expect", FORMS)
def test_both_forms(files: Dict[bytes, bytes], args: Any, kwargs: Any, expect: Any) -> None:
    loader = AsyncLoader.Loader(*args, **kwargs)
    try:
        got = (loader.queue_depth, loader.max_file_size, loader.n_workers, loader.dispatch_n,
               loader.idle_iters, loader.direct)
        mfs = expect[1] or AsyncLoader.default_max_file_size(expect[0], expect[2])
        assert got == (expect[0], mfs) + expect[2:]
        loader.spawn_loader()
        w = loader.get_worker_context(id=1)
        assert isinstance(w, AsyncLoader.Worker)
        assert prototype_load(w, files, sorted(files)) == len(files)
    finally:
        loader.shutdown()
        loader.close()


@pytest.mark.parametrize("args,kwargs,words", [
    # README form with 4-5 positionals reads as the released one; its
    # max_file_size cannot be a worker count, so it is refused, not guessed
    ((64, 1 << 20, 2, 1), {}, "max_file_size"),
    ((64, 1 << 20, 2, 1, 0), {}, "max_file_size"),
    ((64, 2, 1, 0, 50), {}, "direct"),  # README idle_iters where direct goes
    ((64, 2, 1), dict(max_idle_iters=0, idle_iters=0), "idle_iters"),
    ((64, 2, 1, 0), dict(n_workers=2), "n_workers"),
    ((64,), dict(n_workers=2, bogus=1), "bogus"),
    ((64, 1 << 20), {}, "n_workers"),
    ((), dict(queue_depth=4, n_workers=2, dispatch_n=1), None),  # fine: README, defaults
])
def test_ambiguous_or_wrong_calls_raise(args: Any, kwargs: Any, words: Any) -> None:
    if words is None:
        AsyncLoader.Loader(*args, **kwargs).close()
        return
    with pytest.raises(TypeError, match=words):
        AsyncLoader.Loader(*args, **kwargs)


@pytest.mark.parametrize("args,exc", [
    ((0, 1, 1, 0), ValueError),
    ((4, 0, 1, 0), ValueError),
    ((asyncload.MAX_QUEUE_DEPTH + 1, 1, 1, 0), ValueError),
    ((4, 1, 1, -1), ValueError),
    ((4.0, 1, 1, 0), TypeError),
    ((4, 1, 1, "0"), TypeError),
])
def test_bad_values_raise(args: Any, exc: type) -> None:
    with pytest.raises(exc):
        AsyncLoader.Loader(*args)


def test_default_max_file_size() -> None:
    d = AsyncLoader.default_max_file_size
    assert d(4, 1) == 1 << 30
    assert d(8192, 1) == 512 << 20
    assert d(8192, 4) == 128 << 20
    assert d(asyncload.MAX_QUEUE_DEPTH, asyncload.MAX_ENTRIES // asyncload.MAX_QUEUE_DEPTH) \
        == 64 << 20
    # every region fits 4 TiB of address space, plus each buffer's two extra pages
    for depth in (1, 4, 100, 4096, 8192):
        for n in (1, 3, 8):
            assert depth * n * d(depth, n) <= 1 << 42


def test_too_large_for_default_is_an_error_not_a_hang(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "huge"
    with open(path, "wb") as f:
        f.truncate((64 << 20) + 1)  # sparse: nothing is read before EFBIG
    loader = AsyncLoader.Loader(8192, 8, 1, 0)
    try:
        assert loader.max_file_size == 64 << 20
        loader.spawn_loader()
        w = loader.get_worker_context(id=7)
        assert w.request(filepath=os.fsencode(path)) is True
        e = w.wait_get(timeout=10)
        with pytest.raises(asyncload.LoadError):
            e.get_data()
        e.release()
    finally:
        loader.shutdown()
        loader.close()


# ---------------------------------------------------------------- classes


def test_bytes_paths_here_str_in_asyncload(files: Dict[bytes, bytes]) -> None:
    path = sorted(files)[5]
    for mod, want in ((AsyncLoader, path), (asyncload, os.fsdecode(path))):
        loader = mod.Loader(4, 1 << 22, 1)
        try:
            loader.spawn_loader()
            w = loader.get_worker_context(id=0)
            assert w.request(filepath=path) is True
            e = w.wait_get()
            assert e.get_filepath() == want and type(e.get_filepath()) is type(want)
            assert e.path == os.fsdecode(path)
            assert e.get_data() == files[path]
            e.release()
        finally:
            loader.shutdown()
            loader.close()
    assert issubclass(AsyncLoader.Entry, asyncload.Entry)
    assert issubclass(AsyncLoader.Loader, asyncload.Loader)


def test_request_false_when_full_and_pickle_keeps_class(files: Dict[bytes, bytes]) -> None:
    loader = AsyncLoader.Loader(4, 1, 1, 0)
    try:
        w = loader.get_worker_context(id=0)
        assert pickle.loads(pickle.dumps(w)) is w
        assert type(pickle.loads(pickle.dumps(loader))) is AsyncLoader.Loader
        path = sorted(files)[3]
        assert [w.request(filepath=path) for _ in range(5)] == [True] * 4 + [False]
        loader.spawn_loader()
        for _ in range(4):
            e = w.wait_get()
            assert e.get_data() == files[path]
            e.release()
    finally:
        loader.shutdown()
        loader.close()


def test_depth_8192_fills_and_returns_every_byte(tmp_path: pathlib.Path) -> None:
    small = {os.fsencode(p): d for p, d in
             make_files(str(tmp_path), 64, seed=3, max_size=3000).items()}
    loader = AsyncLoader.Loader(8192, 2, 64, 0)
    try:
        w = loader.get_worker_context(id=0)
        paths = sorted(small) * 128  # 8192 requests
        assert all(w.request(filepath=p) for p in paths)
        assert w.request(filepath=paths[0]) is False  # the queue is exactly 8192 deep
        loader.spawn_loader()
        seen: Dict[bytes, int] = {}
        for _ in paths:
            e = w.wait_get(timeout=20)
            assert e.get_data() == small[e.get_filepath()]
            seen[e.get_filepath()] = seen.get(e.get_filepath(), 0) + 1
            e.release()
        assert seen == {p: 128 for p in small}
    finally:
        loader.shutdown()
        loader.close()


# ---------------------------------------------------------------- kill and replace


def _shmem_kb() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssShmem:"):
                return int(line.split()[1])
    return 0


def _memfds() -> int:
    n = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            n += "memfd:" in os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            pass
    return n


@pytest.mark.deadline(60)
def test_become_loader_killed_and_replaced_a_dozen_times(files: Dict[bytes, bytes]) -> None:
    """No close(), no shutdown(): the prototype had neither. Each Loader is
    dropped by rebinding the name, as those programs did."""
    gc.collect()
    fds0, maps0, memfds0, shm0 = fd_count(), memfd_mappings(), _memfds(), _shmem_kb()
    me = os.getpid()
    # children of earlier tests (a forkserver, a resource tracker) are not ours
    kids0 = {c for c, _ in children_of(me)}
    depths = [4, 8192, 16, 4096, 64, 2048, 256, 1024, 8, 512, 32, 128]
    paths = sorted(files)
    loader = p = w = None
    prev = -1
    for i, depth in enumerate(depths):
        form = i % 4
        if form == 0:
            loader = AsyncLoader.Loader(depth, 2, 1, 0)
        elif form == 1:
            loader = AsyncLoader.Loader(queue_depth=depth, n_workers=2, dispatch_n=4,
                                        max_idle_iters=1000, direct=False)
        elif form == 2:
            loader = AsyncLoader.Loader(depth, 4 << 20, 2, 1, 0, False)
        else:
            loader = AsyncLoader.Loader(queue_depth=depth, max_file_size=4 << 20, n_workers=2,
                                        dispatch_n=1, idle_iters=0, direct=False)
        p = FORK.Process(target=loader.become_loader)
        p.start()
        w = loader.get_worker_context(id=i % 2)
        # with the names rebound, the previous loader, its region and its
        # killed process are gone (multiprocessing reaps a killed child at
        # a later start(), so the last two killed may still be zombies: no growth)
        assert memfd_mappings() == maps0 + 1 and _memfds() == memfds0 + 1
        kids = [k for k in children_of(me) if k[0] not in kids0]
        # SIGKILL is asynchronous: the child killed last may still be exiting
        assert {c for c, state in kids if state != "Z"} <= {p.pid, prev}, kids
        assert len(kids) <= 3, kids
        assert prototype_load(w, files, paths) == len(paths)
        p.kill()
        prev = p.pid
    assert p is not None
    p.join(5)
    assert p.exitcode == -9
    del loader, w, p
    gc.collect()
    # multiprocessing reaps a killed child lazily (next start(), or
    # active_children()); one killed earlier may take a moment to exit
    deadline = time.monotonic() + 5
    def ours() -> list:
        return [k for k in children_of(me) if k[0] not in kids0]
    while (multiprocessing.active_children() or ours()) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert ours() == []
    assert fd_count() == fds0
    assert memfd_mappings() == maps0 and _memfds() == memfds0
    assert _shmem_kb() <= shm0 + 1024, (_shmem_kb(), shm0)
