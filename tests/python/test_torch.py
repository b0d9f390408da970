"""Tests of asyncload.torch with real PyTorch DataLoaders: every file exactly
once per epoch, shuffling, many epochs, fork/spawn/forkserver workers
(persistent or not), num_workers=0, ImageFolder, errors that name the file,
and shutdown that leaves no process behind (Ctrl-C, exceptions, killed workers).

Files are small and epochs few: spawn/forkserver workers and the whole-program
tests each import torch, which dominates the time of this file, so there are
few of them (the id handover of non-persistent workers is exercised with fork).
"""

from __future__ import annotations

import errno
import gc
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from typing import Any, Dict, List, Optional, Tuple

import pytest
from torch.utils.data import DataLoader, get_worker_info

import asyncload
from al_testutil import make_files
from asyncload.torch import FileDataset, ImageFolder

# (bytes, DataLoader worker id or -1 in the main process, asyncload slot, pid)
Tagged = Tuple[bytes, int, int, int]


def _tag(data: memoryview) -> Tagged:
    """Transform recording who produced the item (module level: picklable)."""
    info = get_worker_info()
    if info is None:
        return bytes(data), -1, -1, os.getpid()
    return bytes(data), info.id, info.dataset.worker.id, os.getpid()


def _keep(batch: List[Any]) -> List[Any]:
    """collate_fn that keeps the items as they are."""
    return batch


def _alive(pid: int) -> bool:
    """True if pid is a process that is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def _wait_gone(pids: List[int], timeout: float = 10.0) -> List[int]:
    """The pids still alive after waiting up to timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        left = [p for p in pids if _alive(p)]
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.05)


@pytest.fixture
def tree(tmp_path: Any) -> Dict[str, bytes]:
    """30 files of distinct random content (0 .. 20 kB): path -> bytes."""
    return make_files(str(tmp_path / "data"), 30, seed=5, max_size=20_000)


def _run_epochs(ds: FileDataset, epochs: int, **dl_args: Any) -> List[List[Tagged]]:
    dl = DataLoader(ds, batch_size=4, shuffle=True, collate_fn=_keep, **dl_args)
    runs = [[item for batch in dl for item in batch] for _ in range(epochs)]
    del dl
    gc.collect()  # persistent workers stop when their iterator goes
    return runs


CONFIGS = [
    # (start method, num_workers, persistent_workers, epochs)
    ("main", 0, False, 3),
    ("fork", 2, True, 3),
    ("fork", 2, False, 3),
    ("spawn", 2, True, 2),
    ("forkserver", 1, False, 2),
]


@pytest.mark.deadline(90)
@pytest.mark.parametrize("method,num_workers,persistent,epochs", CONFIGS,
                         ids=[f"{c[0]}-w{c[1]}-{'persistent' if c[2] else 'fresh'}"
                              for c in CONFIGS])
def test_every_file_once_per_epoch(tree: Dict[str, bytes], method: str, num_workers: int,
                                   persistent: bool, epochs: int) -> None:
    paths = sorted(tree)
    expected = sorted(tree[p] for p in paths)
    extra: Dict[str, Any] = {}
    if num_workers:
        extra = {"multiprocessing_context": mp.get_context(method),
                 "persistent_workers": persistent}
    with FileDataset(paths, transform=_tag, n_workers=num_workers + 1,
                     queue_depth=8) as ds:
        loader_pid = ds.loader.pid
        assert loader_pid is not None and _alive(loader_pid)
        runs = _run_epochs(ds, epochs, num_workers=num_workers, **extra)
        orders = []
        worker_pids: List[int] = []
        for run in runs:
            assert sorted(item[0] for item in run) == expected  # each file exactly once
            orders.append([item[0] for item in run])
            ids = {item[1] for item in run}
            slots = {item[2] for item in run}
            pids = {item[3] for item in run}
            if num_workers == 0:
                assert ids == {-1} and pids == {os.getpid()}
            else:
                # every worker attached with its own id, as its own slot
                assert ids == set(range(num_workers)) and slots == ids
                assert len(pids) == num_workers and os.getpid() not in pids
            if num_workers:
                worker_pids.append(sorted(pids))
        # shuffled: not in path order, and a new order every epoch
        assert orders[0] != [tree[p] for p in paths]
        assert all(a != b for a, b in zip(orders, orders[1:]))
        if num_workers and not persistent:
            # new processes each epoch took over the previous holders' slots
            assert len({p for ps in worker_pids for p in ps}) == num_workers * epochs
        elif num_workers:
            assert all(ps == worker_pids[0] for ps in worker_pids)
        if num_workers == 0:
            assert ds.worker.id == ds.loader.n_workers - 1  # the main process's slot
            assert ds.worker.in_flight == 0
    assert ds.closed
    assert _wait_gone([loader_pid]) == []
    assert _wait_gone([p for ps in worker_pids for p in ps]) == []


def test_items_by_hand_and_order(tree: Dict[str, bytes]) -> None:
    paths = sorted(tree)
    with FileDataset(paths, n_workers=1, queue_depth=4) as ds:
        assert len(ds) == len(paths) and ds.paths == paths
        assert ds[5] == tree[paths[5]] and ds[-1] == tree[paths[-1]]
        # a batch bigger than the queue, with repeats, comes back in request order
        idx = [7, 3, 3, 29, 0, 7, 12, 15, 3, 1, 2]
        assert ds.__getitems__(idx) == [tree[paths[i]] for i in idx]
        assert ds.__getitems__([]) == []
        with pytest.raises(IndexError):
            ds[len(paths)]
        assert ds.worker.in_flight == 0


def test_transform_gets_a_view_valid_only_during_the_call(tree: Dict[str, bytes]) -> None:
    paths = sorted(tree)[3:6]
    kept: List[memoryview] = []

    def keep_view(data: memoryview) -> int:
        assert isinstance(data, memoryview) and data.readonly
        kept.append(data)
        return len(data)

    with FileDataset(paths, transform=keep_view, n_workers=1) as ds:
        assert ds.__getitems__([0, 1, 2]) == [len(tree[p]) for p in paths]
        with pytest.raises(ValueError):  # released after the call
            bytes(kept[0])
        # returning a view of the buffer is refused, with a hint, not a dangling view
        leaky = FileDataset(paths, transform=lambda d: d[1:], n_workers=1, start=False)
        with leaky, pytest.raises(BufferError, match="only valid during the transform"):
            leaky[0]


def test_lazy_start_and_pickle_carries_the_handle(tree: Dict[str, bytes]) -> None:
    import pickle

    paths = sorted(tree)
    ds = FileDataset(paths, n_workers=2, start=False)
    try:
        assert "not started" in repr(ds)
        blob = pickle.dumps(ds)  # starts the loader: its handle must travel
        pid = ds.loader.pid
        copy = pickle.loads(blob)
        assert copy.loader is ds.loader  # same process: the same Loader, not a new one
        assert copy[2] == tree[paths[2]]
        copy.close()  # a copy does not own the loader
        assert ds.loader.running and ds.loader.pid == pid
    finally:
        ds.close()
    with pytest.raises(ValueError):
        ds[0]


def test_missing_file_main_process(tree: Dict[str, bytes], tmp_path: Any) -> None:
    missing = str(tmp_path / "no-such-file.bin")
    paths = sorted(tree)[:6] + [missing] + sorted(tree)[6:10]
    with FileDataset(paths, n_workers=1, queue_depth=4) as ds:
        with pytest.raises(asyncload.LoadError) as ei:
            for _ in DataLoader(ds, batch_size=5, shuffle=True, collate_fn=_keep):
                pass
        assert ei.value.errno == errno.ENOENT and ei.value.filename == missing
        assert missing in str(ei.value)
        # the failed batch left nothing in flight: the next one is clean
        assert ds.worker.in_flight == 0
        assert ds.__getitems__([0, 1]) == [tree[p] for p in paths[:2]]
    with FileDataset([str(tmp_path)], n_workers=1) as ds, \
            pytest.raises(asyncload.LoadError) as ei2:
        ds[0]
    assert ei2.value.errno == errno.EISDIR


def _drain(dl: DataLoader) -> Tuple[List[Any], List[BaseException]]:
    """One epoch, going on after failed batches (as a training loop that skips
    bad batches would); also keeps DataLoader's shutdown quick, which stalls
    for seconds when an iterator is dropped right after a worker's exception."""
    items: List[Any] = []
    errors: List[BaseException] = []
    it = iter(dl)
    while True:
        try:
            items.extend(next(it))
        except StopIteration:
            return items, errors
        except Exception as e:  # noqa: BLE001 - collected for the asserts
            errors.append(e)


def test_missing_file_through_worker_names_the_path(tree: Dict[str, bytes],
                                                    tmp_path: Any) -> None:
    missing = str(tmp_path / "gone" / "sample-0042.jpg")
    paths = sorted(tree)[:8] + [missing]
    with FileDataset(paths, n_workers=3) as ds:
        dl = DataLoader(ds, batch_size=3, shuffle=True, num_workers=2, collate_fn=_keep,
                        multiprocessing_context=mp.get_context("fork"))
        items, errors = _drain(dl)
        assert len(errors) == 1 and isinstance(errors[0], OSError)
        assert missing in str(errors[0]) and "LoadError" in str(errors[0])
        assert "No such file or directory" in str(errors[0])
        # PyTorch rebuilds it from its message: errno and filename survive
        assert isinstance(errors[0], asyncload.LoadError)
        assert errors[0].errno == errno.ENOENT and errors[0].filename == missing
        # the other batches came through
        assert len(items) == 9 - 3 and set(items) <= {tree[p] for p in paths[:8]}
        del dl


def test_too_few_slots_is_explained(tree: Dict[str, bytes]) -> None:
    with FileDataset(sorted(tree), n_workers=2) as ds:
        dl = DataLoader(ds, batch_size=4, num_workers=2, collate_fn=_keep,
                        multiprocessing_context=mp.get_context("fork"))
        _, errors = _drain(dl)
        assert errors and all("n_workers >= 3" in str(e) for e in errors)


def test_killed_worker_then_next_epoch(tree: Dict[str, bytes]) -> None:
    paths = sorted(tree)
    with FileDataset(paths, transform=_tag, n_workers=3, queue_depth=4) as ds:
        dl = DataLoader(ds, batch_size=2, shuffle=True, num_workers=2, collate_fn=_keep,
                        multiprocessing_context=mp.get_context("fork"))
        with pytest.raises(RuntimeError, match="DataLoader worker"):
            for batch in dl:
                os.kill(batch[0][3], signal.SIGKILL)
        # fresh workers take over the slots (the killed one's included)
        run = [item for batch in dl for item in batch]
        assert sorted(item[0] for item in run) == sorted(tree.values())
        assert {item[2] for item in run} == {0, 1}
        del dl


def test_exception_in_training_loop_leaves_no_loader(tree: Dict[str, bytes]) -> None:
    def train() -> int:
        ds = FileDataset(sorted(tree), n_workers=3)
        pid = ds.loader.pid
        assert pid is not None
        dl = DataLoader(ds, batch_size=4, shuffle=True, num_workers=2, collate_fn=_keep,
                        persistent_workers=True,
                        multiprocessing_context=mp.get_context("fork"))
        try:
            for _ in dl:
                raise ZeroDivisionError("bad step")
        except ZeroDivisionError:
            pass
        return pid

    pid = train()  # neither closed nor used in a `with`: the finalizer must stop it
    gc.collect()
    assert _wait_gone([pid]) == []


def test_image_folder(tmp_path: Any) -> None:
    root = tmp_path / "imgs"
    content: Dict[str, bytes] = {}
    layout = {"dog": ["b.jpg", "a.JPEG", "sub/c.png"], "cat": ["x.webp", "notes.txt"],
              "bird": ["1.bmp"]}
    for cls, names in layout.items():
        for i, name in enumerate(names):
            p = root / cls / name
            p.parent.mkdir(parents=True, exist_ok=True)
            data = f"{cls}/{name}/{i}".encode()
            p.write_bytes(data)
            content[str(p)] = data
    (root / "stray.jpg").write_bytes(b"not in a class folder")
    # decode=None: raw bytes (these are not images); test_imagefolder.py has the decoding
    with ImageFolder(str(root), decode=None, n_workers=1) as ds:
        assert ds.classes == ["bird", "cat", "dog"]
        assert ds.class_to_idx == {"bird": 0, "cat": 1, "dog": 2}
        rel = [(os.path.relpath(p, root), t) for p, t in ds.samples]
        assert rel == [("bird/1.bmp", 0), ("cat/x.webp", 1), ("dog/a.JPEG", 2),
                       ("dog/b.jpg", 2), ("dog/sub/c.png", 2)]
        assert ds.targets == [t for _, t in ds.samples] and ds.imgs == ds.samples
        got = [item for batch in DataLoader(ds, batch_size=2, shuffle=True, collate_fn=_keep)
               for item in batch]
        assert sorted(got) == sorted((content[p], t) for p, t in ds.samples)
    with ImageFolder(root, transform=len, target_transform=lambda t: -t, decode=None,
                     extensions=(".txt",), allow_empty=True, n_workers=1) as ds:
        assert [os.path.basename(p) for p, _ in ds.samples] == ["notes.txt"]
        assert ds[0] == (len(content[str(root / "cat" / "notes.txt")]), -1)
    with pytest.raises(FileNotFoundError, match="bird"):
        ImageFolder(root, extensions=(".txt",), start=False)


# ------------------------------------------------------------ whole programs

_PROGRAM = textwrap.dedent("""
    import os, signal, sys, time
    import torch
    from torch.utils.data import DataLoader
    from asyncload.torch import FileDataset

    mode, paths = sys.argv[1], sys.argv[2:]

    def keep(batch):
        return batch

    def tag(data):
        time.sleep(0.01)  # slow enough that epochs are in flight when we strike
        return bytes(data), os.getpid()

    ds = FileDataset(paths, transform=tag, n_workers=3, queue_depth=4)
    dl = DataLoader(ds, batch_size=2, shuffle=True, num_workers=2, collate_fn=keep,
                    persistent_workers=(mode != "kill-worker"))
    print("loader", ds.loader.pid, flush=True)
    for epoch in range(1000):
        for i, batch in enumerate(dl):
            if i == 1:
                print("ready", flush=True)
                if mode == "kill-worker":
                    os.kill(batch[0][1], signal.SIGKILL)
""")


def _token_processes(token: bytes) -> List[int]:
    """Live processes whose environment holds token."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as f:
                if token in f.read():
                    if _alive(int(name)):
                        found.append(int(name))
        except OSError:
            continue
    return found


@pytest.mark.deadline(60)
@pytest.mark.parametrize("mode", ["sigint", "kill-worker"])
def test_program_exit_leaves_no_process(tree: Dict[str, bytes], mode: str) -> None:
    # Every descendant inherits the environment, so the token finds the loader
    # and DataLoader workers even after they were orphaned.
    token = f"ASYNCLOAD_TORCH_TEST={uuid.uuid4().hex}"
    env = dict(os.environ, ASYNCLOAD_TORCH_TEST=token.split("=", 1)[1])
    proc = subprocess.Popen([sys.executable, "-c", _PROGRAM, mode, *sorted(tree)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    err = b""
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline().split()
        assert first[:1] == [b"loader"], proc.stderr.read() if proc.stderr else first
        assert proc.stdout.readline().strip() == b"ready"
        if mode == "sigint":
            assert len(_token_processes(token.encode())) >= 4  # main, loader, 2 workers
            proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0
    expect = {"sigint": b"KeyboardInterrupt", "kill-worker": b"DataLoader worker"}[mode]
    assert expect in err, err.decode(errors="replace")[-2000:]
    left: Optional[List[int]] = None
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        left = _token_processes(token.encode())
        if not left:
            break
        time.sleep(0.05)
    assert left == [], f"left behind: {left}"
