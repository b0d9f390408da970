"""Tests of asyncload.torch.FileStream: the sharding math against
DistributedSampler, a queue that never drains at batch or epoch boundaries,
epochs and set_epoch (persistent workers too), ordered=True, mid-epoch resume
with torchdata's StatefulDataLoader, errors (raise with errno/path, or skip and
count), fork/spawn/forkserver workers and num_workers=0, and the two-rank
torchrun example (one loader for the node).

Files are few and small; spawn/forkserver cases are one each (each imports
torch in its workers, which dominates their time).
"""

from __future__ import annotations

import errno
import multiprocessing as mp
import os
import subprocess
import sys
from collections import Counter
from typing import Any, Dict, List, Tuple

import pytest
from torch.utils.data import DataLoader, DistributedSampler, get_worker_info
from torchdata.stateful_dataloader import StatefulDataLoader

import asyncload
from al_testutil import make_files
from asyncload.torch import FileDataset, FileStream
from asyncload._shard import shard_indices

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _keep(batch: List[Any]) -> List[Any]:
    return batch


def _in_flight_at_boundary(batch: List[Any]) -> Tuple[List[Any], int]:
    """collate_fn: runs in the worker once its batch is complete (the
    generator is suspended), so this is the queue at the batch boundary."""
    info = get_worker_info()
    assert info is not None
    return batch, info.dataset._worker.in_flight


@pytest.fixture
def tree(tmp_path: Any) -> Dict[str, bytes]:
    return make_files(str(tmp_path / "d"), 60, max_size=4096)


def _stream(tree: Dict[str, bytes], **kw: Any) -> FileStream:
    kw.setdefault("queue_depth", 8)
    return FileStream(sorted(tree), **kw)


# -- sharding math ------------------------------------------------------------

@pytest.mark.parametrize("drop_last", [False, True])
@pytest.mark.parametrize("n", [1, 7, 12, 31])
def test_sharding_covers_every_index_once(n: int, drop_last: bool) -> None:
    for world in (1, 2, 3, 4):
        for nw in (1, 2, 3):
            for epoch in (0, 1):
                got: List[int] = []
                for rank in range(world):
                    share: List[int] = []
                    for w in range(nw):
                        share += shard_indices(n, epoch, seed=5, drop_last=drop_last,
                                               rank=rank, world_size=world,
                                               worker=w, num_workers=nw)
                    sampler = DistributedSampler(range(n), num_replicas=world, rank=rank,
                                                 shuffle=True, seed=5, drop_last=drop_last)
                    sampler.set_epoch(epoch)
                    assert sorted(share) == sorted(sampler), (world, nw, rank)
                    got += share
                counts = Counter(got)
                if drop_last:
                    assert len(got) == n // world * world and max(counts.values(), default=1) == 1
                else:
                    assert set(counts) == set(range(n))
                    # padding repeats at most world-1 samples, each once
                    assert len(got) == -(-n // world) * world
                    assert sum(c - 1 for c in counts.values()) == len(got) - n
    # epochs differ, one epoch's order is the same everywhere it is computed
    assert shard_indices(50, 0) != shard_indices(50, 1)
    assert shard_indices(50, 3, seed=9) == shard_indices(50, 3, seed=9)
    assert shard_indices(10, 0, shuffle=False) == list(range(10))


def test_rank_from_environment(tree: Dict[str, bytes], monkeypatch: pytest.MonkeyPatch) -> None:
    got: List[bytes] = []
    for rank in (0, 1, 2):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "3")
        with _stream(tree, seed=3, num_workers=0) as s:
            assert (s.rank, s.world_size, s.local_world_size) == (rank, 3, 1)
            assert len(s) == 20
            part = list(s)
            assert len(part) == 20
            got += part
    assert sorted(got) == sorted(tree.values())


# -- never drains -------------------------------------------------------------

def test_never_drains_main_process(tree: Dict[str, bytes]) -> None:
    """After every yield (where a batch may end) loads are in flight, up to
    the last sample of the epoch (the next epoch's first reads by then);
    FileDataset's queue is empty at each batch boundary."""
    with _stream(tree, num_workers=0) as s:
        it = iter(s)
        seen = []
        for item in it:
            seen.append(item)
            assert s._worker is not None and s._worker.in_flight > 0, len(seen)
        assert sorted(seen) == sorted(tree.values())
        # the next epoch's first reads were queued before this one ended ...
        carry = s._carry
        assert carry is not None and carry.epoch == 1 and carry.count > 0
        # ... and are taken over by the next iteration: no sample lost or doubled
        s.set_epoch(1)
        second = list(s)
        assert sorted(second) == sorted(tree.values())
        assert second[:3] != seen[:3]
    with FileDataset(sorted(tree), n_workers=1, queue_depth=8) as ds:
        ds.__getitems__(list(range(8)))
        assert ds.worker.in_flight == 0  # the map-style dataset drains per batch


def test_never_drains_in_dataloader_worker(tree: Dict[str, bytes]) -> None:
    with _stream(tree, num_workers=2) as s:
        dl = DataLoader(s, batch_size=4, num_workers=2, collate_fn=_in_flight_at_boundary,
                        multiprocessing_context=mp.get_context("fork"))
        items, flights = [], []
        for batch, n in dl:
            items += batch
            flights.append(n)
        assert sorted(items) == sorted(tree.values())
        assert len(flights) == 16 and min(flights) > 0, flights


def _boundary_state(batch: List[Any]) -> Tuple[List[Any], int, int]:
    info = get_worker_info()
    assert info is not None
    return batch, info.dataset._worker.in_flight, info.dataset._adopted


def test_never_drains_across_epochs_in_persistent_workers(tree: Dict[str, bytes]) -> None:
    """Persistent workers queue the next epoch's first reads before the
    current epoch ends (in flight at every boundary, the last one included)
    and the next epoch takes them over."""
    with _stream(tree, num_workers=2) as s:
        dl = DataLoader(s, batch_size=4, num_workers=2, collate_fn=_boundary_state,
                        persistent_workers=True,
                        multiprocessing_context=mp.get_context("fork"))
        for epoch in (0, 1):
            s.set_epoch(epoch)
            items, flights, adopted = [], [], []
            for batch, n, a in dl:
                items += batch
                flights.append(n)
                adopted.append(a)
            assert sorted(items) == sorted(tree.values())
            assert min(flights) > 0, flights
            assert set(adopted) == {epoch}, adopted  # epoch 1 started from epoch 0's reads


# -- epochs -------------------------------------------------------------------

@pytest.mark.parametrize("persistent", [True, False])
def test_epochs_and_set_epoch(tree: Dict[str, bytes], persistent: bool) -> None:
    with _stream(tree, num_workers=2, seed=4) as s:
        dl = DataLoader(s, batch_size=5, num_workers=2, collate_fn=_keep,
                        persistent_workers=persistent,
                        multiprocessing_context=mp.get_context("fork"))
        orders = []
        for epoch in (0, 1, 1, 3):
            s.set_epoch(epoch)
            got = [x for b in dl for x in b]
            assert sorted(got) == sorted(tree.values()), epoch
            # each worker read its share of this epoch's permutation
            by_path = {v: k for k, v in tree.items()}
            share0 = {sorted(tree)[i] for i in s.indices(epoch, 0, 2)}
            first = {by_path[x] for x in got[:5]}  # batch 0 comes from worker 0
            assert first <= share0
            orders.append(sorted(by_path[x] for x in got[:5]))
        assert orders[1] == orders[2] and orders[0] != orders[1]


def test_ordered(tree: Dict[str, bytes]) -> None:
    paths = sorted(tree)
    with _stream(tree, ordered=True, num_workers=2, seed=2, queue_depth=4) as s:
        s.set_epoch(1)
        got = list(s)
        assert got == [tree[paths[i]] for i in s.indices(1)]
        dl = DataLoader(s, batch_size=3, num_workers=2, collate_fn=_keep,
                        multiprocessing_context=mp.get_context("fork"))
        batches = list(dl)
        w0 = [x for b in batches[0::2] for x in b]
        assert w0 == [tree[paths[i]] for i in s.indices(1, 0, 2)]


# -- resume -------------------------------------------------------------------

@pytest.mark.parametrize("num_workers", [0, 2])
def test_state_dict_resume_mid_epoch(tree: Dict[str, bytes], num_workers: int) -> None:
    def loader(s: FileStream) -> StatefulDataLoader:
        return StatefulDataLoader(s, batch_size=4, num_workers=num_workers, collate_fn=_keep,
                                  multiprocessing_context=(mp.get_context("fork")
                                                           if num_workers else None))

    with _stream(tree, num_workers=num_workers, seed=8) as s:
        s.set_epoch(2)
        dl = loader(s)
        first: List[bytes] = []
        for k, b in enumerate(dl):
            first += b
            if k == 4:
                break
        state = dl.state_dict()
        del dl
    # a new process would build a new stream: so does this
    with _stream(tree, num_workers=num_workers, seed=8) as s2:
        dl2 = loader(s2)
        dl2.load_state_dict(state)
        rest = [x for b in dl2 for x in b]
        assert len(first) == 20
        assert sorted(first + rest) == sorted(tree.values())  # no repeat, no gap
        # and the epoch after it is whole again
        s2.set_epoch(3)
        assert sorted(x for b in dl2 for x in b) == sorted(tree.values())
    with _stream(tree, num_workers=0) as s3, pytest.raises(ValueError, match="worker"):
        bad = {"epoch": 0, "progress": dict(state_progress(state), num_workers=7)}
        s3.load_state_dict(bad)
        list(s3)


def state_progress(state: Dict[str, Any]) -> Dict[str, Any]:
    """Any one worker's FileStream progress inside a StatefulDataLoader state."""
    def find(o: Any) -> Any:
        if isinstance(o, dict):
            if "done_below" in o:
                return o
            for v in o.values():
                r = find(v)
                if r is not None:
                    return r
        return None
    p = find(state)
    assert p is not None
    return p


# -- errors -------------------------------------------------------------------

def test_error_raises_with_errno_and_path(tree: Dict[str, bytes], tmp_path: Any) -> None:
    missing = str(tmp_path / "gone.bin")
    paths = sorted(tree)[:10] + [missing]
    with FileStream(paths, shuffle=False, num_workers=0, queue_depth=4) as s:
        with pytest.raises(asyncload.LoadError) as ei:
            list(s)
        assert ei.value.errno == errno.ENOENT and ei.value.filename == missing
        assert s._worker is not None and s._worker.in_flight == 0  # nothing left behind
    with FileStream(paths, num_workers=2, queue_depth=4) as s:
        dl = DataLoader(s, batch_size=2, num_workers=2, collate_fn=_keep,
                        multiprocessing_context=mp.get_context("fork"))
        with pytest.raises(asyncload.LoadError) as ei2:
            for _ in dl:
                pass
        assert missing in str(ei2.value) and "No such file" in str(ei2.value)
        assert ei2.value.errno == errno.ENOENT and ei2.value.filename == missing
        del dl


def test_next_epoch_failure_raises_in_its_own_epoch(tree: Dict[str, bytes], tmp_path: Any,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A file read early for the next epoch fails that epoch, not the current one."""
    missing = str(tmp_path / "gone.bin")
    paths = sorted(tree)[:20] + [missing]
    bad = len(paths) - 1
    seed = next(sd for sd in range(1000)
                if bad not in shard_indices(21, 0, seed=sd, rank=0, world_size=2)
                and bad in shard_indices(21, 1, seed=sd, rank=0, world_size=2)[:4])
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with FileStream(paths, seed=seed, num_workers=0, queue_depth=8) as s:
        assert len(list(s)) == 11  # epoch 0 is whole, with epoch 1's first reads queued
        assert s._carry is not None and s._carry.count >= 4
        s.set_epoch(1)
        with pytest.raises(asyncload.LoadError) as ei:
            list(s)
        assert ei.value.errno == errno.ENOENT and ei.value.filename == missing


def test_error_skip_counts(tree: Dict[str, bytes], tmp_path: Any) -> None:
    missing = [str(tmp_path / f"gone{i}.bin") for i in range(3)]
    paths = sorted(tree) + missing
    with FileStream(paths, num_workers=2, queue_depth=4, on_error="skip") as s:
        dl = DataLoader(s, batch_size=4, num_workers=2, collate_fn=_keep,
                        multiprocessing_context=mp.get_context("fork"))
        got = [x for b in dl for x in b]
        assert sorted(got) == sorted(tree.values())
        assert s.skipped == 3
    with pytest.raises(ValueError):
        FileStream(paths, on_error="ignore", start=False)


# -- start methods ------------------------------------------------------------

@pytest.mark.deadline(60)
@pytest.mark.parametrize("method,persistent,workers,epochs", [
    ("fork", False, 2, 2),
    # spawn/forkserver workers import torch (seconds each): one worker, and
    # the non-persistent case one epoch (fork covers new workers per epoch)
    ("spawn", True, 1, 2),
    ("forkserver", False, 1, 1)])
def test_start_methods(tree: Dict[str, bytes], method: str, persistent: bool, workers: int,
                       epochs: int) -> None:
    targets = list(range(len(tree)))
    with _stream(tree, num_workers=workers, targets=targets) as s:
        dl = DataLoader(s, batch_size=8, num_workers=workers, collate_fn=_keep,
                        persistent_workers=persistent,
                        multiprocessing_context=mp.get_context(method))
        paths = sorted(tree)
        for epoch in range(epochs):
            s.set_epoch(epoch)
            got = [x for b in dl for x in b]
            assert sorted(t for _, t in got) == targets
            assert all(tree[paths[t]] == data for data, t in got)
        del dl


# -- scale-out ----------------------------------------------------------------

@pytest.mark.deadline(170)
def test_ddp_example_two_ranks(tmp_path: Any) -> None:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [os.path.join(REPO, "python")] + os.environ.get("PYTHONPATH", "").split(os.pathsep)),
        ASYNCLOAD_RUN_DIR=str(tmp_path / "run"), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
           "--master-port", str(20000 + os.getpid() % 20000),
           os.path.join(REPO, "examples", "ddp_train.py"), "--data", str(tmp_path / "data"),
           "--files", "96"]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=150)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-4000:]
    assert "DDP_OK" in r.stdout
    assert r.stdout.count("each exactly once") == 3
    assert "one loader process for the node" in r.stdout
    assert os.listdir(tmp_path / "run") == []  # the handle file went with the loader
