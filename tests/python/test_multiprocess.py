"""Workers in other processes: fork, spawn and forkserver children, pickling,
attaching from an unrelated program, and per-process ownership of slots."""

from __future__ import annotations

import errno
import gc
import multiprocessing as mp
import os
import pickle
import subprocess
import sys
import textwrap
from typing import Dict, List, Tuple

import pytest

import asyncload
from al_testutil import load_and_check


def _child_load(worker: asyncload.Worker, expected: Dict[str, bytes]) -> None:
    """Runs in the child: exit status 0 only if every byte matched."""
    problems = load_and_check(worker, expected)
    if problems:
        print("\n".join(problems), file=sys.stderr)
        os._exit(1)
    os._exit(0)


def _child_loader_arg(loader: asyncload.Loader, wid: int, expected: Dict[str, bytes]) -> None:
    _child_load(loader.get_worker_context(wid), expected)


@pytest.mark.deadline(60)
@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_integrity_in_child_processes(method: str, loader: asyncload.Loader,
                                      files: Dict[str, bytes]) -> None:
    ctx = mp.get_context(method)
    paths = sorted(files)
    shares = [{p: files[p] for p in paths[i::2]} for i in range(2)]
    procs = [ctx.Process(target=_child_load, args=(loader.get_worker_context(i), shares[i]))
             for i in range(2)]
    # one child gets the Loader itself (pickled too under spawn/forkserver)
    procs.append(ctx.Process(target=_child_loader_arg, args=(loader, 2, files)))
    for p in procs:
        p.start()
    for p in procs:
        p.join(40)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    # the parent can still use a slot no child took
    assert load_and_check(loader.get_worker_context(3), shares[0]) == []


def test_pickle_round_trip_in_process(loader: asyncload.Loader) -> None:
    w = loader.get_worker_context(1)
    assert pickle.loads(pickle.dumps(w)) is w
    assert pickle.loads(pickle.dumps(loader)) is loader
    w2 = pickle.loads(pickle.dumps(loader.get_worker_context(2)))
    assert w2.id == 2 and w2.loader is loader


def test_attach_from_unrelated_process(loader: asyncload.Loader, files: Dict[str, bytes]) -> None:
    path = sorted(files)[9]
    script = textwrap.dedent(f"""
        import pickle, sys, asyncload
        ld = asyncload.Loader.attach({loader.handle!r})
        assert ld.running and ld.n_workers == 4 and ld.queue_depth == 8
        w = ld.get_worker_context(3)
        assert w.request({path!r})
        with w.wait_get(timeout=5) as e:
            sys.stdout.buffer.write(e.get_data())
        # a pickled Worker from the creator resolves to the same attachment
        w2 = pickle.loads(sys.stdin.buffer.read())
        assert w2.loader.handle == ld.handle and w2.id == 1
        assert w2.request({path!r})
        w2.wait_get(timeout=5).release()
        ld.close()
    """)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=20,
                         env=env, input=pickle.dumps(loader.get_worker_context(1)))
    assert res.returncode == 0, res.stderr.decode()
    assert res.stdout == files[path]
    # the loader still works for its creator after the other process left
    assert load_and_check(loader.get_worker_context(0), {path: files[path]}) == []


def test_attach_to_closed_loader_fails() -> None:
    ld = asyncload.Loader(2, 4096, 1)
    ld.spawn_loader()
    handle = ld.handle
    ld.close()
    with pytest.raises((FileNotFoundError, asyncload.LoaderClosedError)):
        asyncload.Loader.attach(handle)


def _fork_and_wait(fn) -> int:  # type: ignore[no-untyped-def]
    pid = os.fork()
    if pid == 0:
        code = 3
        try:
            code = fn()
        except BaseException as exc:  # noqa: BLE001 - report through the status
            print(repr(exc), file=sys.stderr)
            code = 4
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def test_slot_belongs_to_one_live_process(loader: asyncload.Loader,
                                          files: Dict[str, bytes]) -> None:
    w0 = loader.get_worker_context(0)
    path = sorted(files)[3]
    w0.request(path)
    w0.wait_get(timeout=5).release()  # the parent has claimed slot 0

    def child() -> int:
        # the inherited Worker re-claims in the child: slot 0 is busy ...
        try:
            w0.request(path)
        except OSError as exc:
            if exc.errno != errno.EBUSY:
                return 5
        else:
            return 6
        # ... while slot 1 is free and works
        return 0 if load_and_check(loader.get_worker_context(1), {path: files[path]}) == [] else 7

    assert _fork_and_wait(child) == 0
    # the child died holding slot 1: it can be taken over
    assert load_and_check(loader.get_worker_context(1), {path: files[path]}) == []
    # and the parent's own slot 0 was not disturbed by the child
    assert load_and_check(w0, {path: files[path]}) == []


def test_entry_inherited_through_fork_is_not_released_by_child(
        loader: asyncload.Loader, files: Dict[str, bytes]) -> None:
    path = sorted(files)[11]
    w = loader.get_worker_context(0)
    w.request(path)
    e = w.wait_get(timeout=5)

    def child() -> int:
        ok = e.get_data() == files[path]  # still mapped in the child
        e.release()  # must only drop the child's copy
        return 0 if ok else 1

    assert _fork_and_wait(child) == 0
    assert e.get_data() == files[path]  # parent's entry untouched
    # ... and still held: only queue_depth - 1 entries are free
    queued = 0
    while w.request(path):
        queued += 1
    assert queued == loader.queue_depth - 1
    for _ in range(queued):
        w.wait_get(timeout=5).release()
    e.release()


def _thread_worker(w: asyncload.Worker, items: List[Tuple[int, str]], all_paths: List[str],
                   files: Dict[str, bytes],
                   total: List[int], lock, errors: List[str], n_total: int) -> None:  # type: ignore[no-untyped-def]
    def take(timeout: float) -> bool:
        try:
            e = w.wait_get(timeout=timeout)
        except TimeoutError:
            return False
        with e:
            # either thread may take the other's entry: the tag says whose
            if e.get_data() != files[all_paths[e.tag]]:
                errors.append(all_paths[e.tag])
        with lock:
            total[0] += 1
        return True

    for i, p in items:
        while not w.request(p, tag=i):
            take(0.05)
    while True:
        with lock:
            if total[0] >= n_total:
                return
        take(0.05)


def test_two_threads_share_one_worker(loader: asyncload.Loader, files: Dict[str, bytes]) -> None:
    import threading

    w = loader.get_worker_context(0)
    paths = sorted(files)
    all_paths = paths * 3  # 120 requests through 8 entries
    total = [0]
    lock = threading.Lock()
    errors: List[str] = []
    threads = [threading.Thread(target=_thread_worker,
                                args=(w, list(enumerate(all_paths))[i::2], all_paths, files,
                                      total, lock, errors,
                                      len(all_paths)))
               for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert not any(t.is_alive() for t in threads)
    assert errors == []
    assert total[0] == len(all_paths)
    assert w.in_flight == 0 and w.try_get() is None


def test_worker_close_refuses_while_a_view_is_alive(loader: asyncload.Loader,
                                                    files: Dict[str, bytes]) -> None:
    """Bytes never change under a live view, also across close() and re-claims."""
    paths = sorted(files)
    w = loader.get_worker_context(0)
    for p in paths[:loader.queue_depth]:
        assert w.request(p)
    held = [w.wait_get(timeout=5) for _ in range(loader.queue_depth)]
    e = next(x for x in held if x.size > 0)
    part = e.data[:]  # derived: release() and close() cannot revoke it
    expected = bytes(part)
    with pytest.raises(BufferError):
        w.close()
    assert not e.released
    assert all(x.released for x in held if x is not e)  # the others were handed back

    def child_claims() -> int:
        try:
            loader.get_worker_context(0).claim()
        except OSError as exc:
            return 0 if exc.errno == errno.EBUSY else 5
        return 6

    assert _fork_and_wait(child_claims) == 0  # still ours: no other claim reuses the entry
    w.claim()
    more = {p: files[p] for p in paths[loader.queue_depth:loader.queue_depth * 4]}
    assert load_and_check(w, more) == []
    assert bytes(part) == expected

    del part
    w.close()
    assert e.released
    # now the slot is free for another process, and for this one again
    assert _fork_and_wait(lambda: 0 if load_and_check(loader.get_worker_context(0), more) == []
                          else 7) == 0
    assert load_and_check(w, more) == []


def test_worker_close_releases_held_entries(loader: asyncload.Loader,
                                            files: Dict[str, bytes]) -> None:
    path = max(files, key=lambda p: len(files[p]))
    w = loader.get_worker_context(1)
    w.request(path)
    e = w.wait_get(timeout=5)
    view = e.data
    w.close()  # a plain data view is revoked, as by release()
    assert e.released
    with pytest.raises(ValueError):
        bytes(view)
    assert _fork_and_wait(lambda: 0 if load_and_check(loader.get_worker_context(1), files) == []
                          else 7) == 0


def test_worker_close_refuses_for_a_dropped_entry_with_a_live_slice(
        loader: asyncload.Loader, files: Dict[str, bytes]) -> None:
    path = max(files, key=lambda p: len(files[p]))
    w = loader.get_worker_context(2)
    w.request(path)
    e = w.wait_get(timeout=5)
    part = e.data[1:]
    del e  # its release() fails quietly in __del__: the slice still reads it
    gc.collect()
    with pytest.raises(BufferError):
        w.close()
    assert _fork_and_wait(lambda: 0 if load_and_check(loader.get_worker_context(2), files) == []
                          else 7) != 0  # the slot is still ours
    assert bytes(part) == files[path][1:]
    del part
    w.close()
    assert _fork_and_wait(lambda: 0 if load_and_check(loader.get_worker_context(2), files) == []
                          else 7) == 0
