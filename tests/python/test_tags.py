"""One request, one tag: Worker.request(tag=), Entry.tag, Worker.wait_batch, and
the item-index tags of Worker.load().

Many requests for the same path at different ranges are told apart only by
their tags; each completion must carry its own tag and its own bytes.
"""

from __future__ import annotations

import os
import pathlib
import random
import signal
import threading
import time
from typing import Dict, List, Tuple

import pytest

import asyncload
from al_testutil import engines_here

U64_MAX = 2**64 - 1
DEPTH = 16
SIZE = 64 * 1024


@pytest.fixture
def shard(tmp_path: pathlib.Path) -> Tuple[str, bytes]:
    data = random.Random(9).randbytes(SIZE)
    path = str(tmp_path / "shard.bin")
    with open(path, "wb") as f:
        f.write(data)
    return path, data


@pytest.fixture(params=engines_here())
def w(request: pytest.FixtureRequest) -> asyncload.Worker:
    """A worker of a running loader, on each engine (tags ride through both)."""
    with asyncload.Loader(queue_depth=DEPTH, max_file_size=1 << 20, n_workers=1,
                          engine=request.param) as ld:
        assert ld.engine == request.param
        yield ld.get_worker_context(0)


def test_random_tags_same_path_ranges(w: asyncload.Worker, shard: Tuple[str, bytes]) -> None:
    path, data = shard
    rng = random.Random(1)
    tags = [0, U64_MAX] + [rng.getrandbits(64) for _ in range(298)]
    assert len(set(tags)) == len(tags)
    rng.shuffle(tags)
    want: Dict[int, bytes] = {}
    offsets: Dict[int, int] = {}
    answered: List[int] = []
    nxt = 0
    while len(answered) < len(tags):
        while nxt < len(tags):
            off = rng.randrange(SIZE + 100)  # sometimes past the end
            length = None if rng.random() < 0.2 else 1 + rng.randrange(8192)
            if not w.request(path, off, length, tag=tags[nxt]):
                break
            want[tags[nxt]] = data[off:] if length is None else data[off:off + length]
            offsets[tags[nxt]] = off
            nxt += 1
        batch = w.wait_batch(timeout=10)
        assert 1 <= len(batch) <= nxt - len(answered)
        for e in batch:
            with e:
                assert isinstance(e.tag, int)
                assert e.tag in want, f"tag {e.tag} was not asked for, or came twice"
                assert e.offset == offsets[e.tag]
                assert e.get_data() == want.pop(e.tag)
                answered.append(e.tag)
    assert sorted(answered) == sorted(tags)
    assert w.try_get() is None


def test_untagged_request_is_tag_zero(w: asyncload.Worker, shard: Tuple[str, bytes]) -> None:
    path, data = shard
    assert w.request(path, 5, 10)
    with w.wait_get(timeout=10) as e:
        assert e.tag == 0 and e.get_data() == data[5:15]
    assert w.request(path, tag=U64_MAX)
    with w.wait_get(timeout=10) as e:
        assert e.tag == U64_MAX and "tag=18446744073709551615" in repr(e)


@pytest.mark.parametrize("bad,exc", [(-1, ValueError), (2**64, ValueError), (1.0, TypeError),
                                     ("1", TypeError), (None, TypeError)])
def test_invalid_tag_raises(w: asyncload.Worker, shard: Tuple[str, bytes], bad: object,
                            exc: type) -> None:
    with pytest.raises(exc, match="tag"):
        w.request(shard[0], tag=bad)  # type: ignore[arg-type]
    assert w.in_flight == 0  # nothing was queued


def _burst(w: asyncload.Worker, path: str, n: int, max: int, base: int) -> int:
    """Queue n requests (tags base..), let them finish, collect them with
    wait_batch(max); returns the size of the first batch."""
    for i in range(n):
        assert w.request(path, tag=base + i)
    time.sleep(0.3)
    seen: List[int] = []
    first = -1
    while len(seen) < n:
        batch = w.wait_batch(max=max, timeout=10)
        assert 1 <= len(batch) <= min(max, n - len(seen))
        first = len(batch) if first < 0 else first
        for e in batch:
            with e:
                seen.append(e.tag)
                assert e.size == SIZE
    assert sorted(seen) == [base + i for i in range(n)]
    return first


def test_wait_batch_max_one(w: asyncload.Worker, shard: Tuple[str, bytes]) -> None:
    assert _burst(w, shard[0], 4, 1, 100) == 1


def test_wait_batch_max_above_ready(w: asyncload.Worker, shard: Tuple[str, bytes]) -> None:
    # Retried: 300 ms is only nearly always enough for four small reads.
    best = 0
    for _ in range(10):
        best = max(best, _burst(w, shard[0], 4, DEPTH, U64_MAX - 3))
        if best == 4:
            break
    assert best == 4, "four ready completions never came in one wait_batch"


def test_wait_batch_default_max_is_queue_depth(w: asyncload.Worker,
                                               shard: Tuple[str, bytes]) -> None:
    for i in range(DEPTH):
        assert w.request(shard[0], i, 1, tag=i)
    assert not w.request(shard[0], tag=99)  # full
    got: List[int] = []
    while len(got) < DEPTH:
        batch = w.wait_batch(timeout=10)
        assert len(batch) <= DEPTH - len(got)
        for e in batch:
            with e:
                assert e.get_data() == shard[1][e.tag:e.tag + 1]
                got.append(e.tag)
    assert sorted(got) == list(range(DEPTH))


def test_wait_batch_timeout(w: asyncload.Worker) -> None:
    t0 = time.monotonic()
    with pytest.raises(TimeoutError):
        w.wait_batch(timeout=0.3)
    assert 0.25 <= time.monotonic() - t0 < 5
    with pytest.raises(TimeoutError):
        w.wait_batch(max=4, timeout=0)


@pytest.mark.parametrize("kwargs,exc", [({"max": 0}, ValueError), ({"max": -1}, ValueError),
                                        ({"max": 2.0}, TypeError), ({"timeout": -1}, ValueError),
                                        ({"timeout": "1"}, TypeError)])
def test_wait_batch_bad_arguments(w: asyncload.Worker, kwargs: Dict[str, object],
                                  exc: type) -> None:
    with pytest.raises(exc):
        w.wait_batch(**kwargs)  # type: ignore[arg-type]


def test_wait_batch_loader_killed_mid_wait() -> None:
    ld = asyncload.Loader(queue_depth=4, max_file_size=4096, n_workers=1)
    try:
        pid = ld.spawn_loader()
        w = ld.get_worker_context(0)
        w.claim()
        killed_at: List[float] = []

        def kill() -> None:
            time.sleep(0.2)
            killed_at.append(time.monotonic())
            os.kill(pid, signal.SIGKILL)

        t = threading.Thread(target=kill)
        t.start()
        with pytest.raises(asyncload.LoaderClosedError):
            w.wait_batch(timeout=10)
        noticed = time.monotonic()
        t.join()
        assert noticed - killed_at[0] < 1.0, f"noticed {noticed - killed_at[0]:.2f} s after"
        with pytest.raises(asyncload.LoaderClosedError):
            w.wait_batch(timeout=0.1)
    finally:
        ld.close()


def test_load_tags_are_item_indices(w: asyncload.Worker, shard: Tuple[str, bytes],
                                    tmp_path: pathlib.Path) -> None:
    path, data = shard
    other = tmp_path / "other.bin"
    other.write_bytes(b"other file")
    items: List[asyncload.LoadRequest] = []
    want: List[bytes] = []
    rng = random.Random(3)
    for i in range(100):
        kind = i % 4
        if kind == 0:
            items.append(path)
            want.append(data)
        elif kind == 1:
            items.append(other)  # os.PathLike
            want.append(b"other file")
        else:
            off, n = rng.randrange(SIZE), rng.randrange(1, 3000)
            items.append((path, off, n))
            want.append(data[off:off + n])
    items.append((path, 100, None))
    want.append(data[100:])
    seen = set()
    for e in w.load(items):
        with e:
            assert 0 <= e.tag < len(items) and e.tag not in seen
            seen.add(e.tag)
            assert e.get_data() == want[e.tag], f"item {e.tag}: {items[e.tag]!r}"
    assert seen == set(range(len(items)))


def test_load_of_a_generator_tags_in_order_drawn(w: asyncload.Worker,
                                                 shard: Tuple[str, bytes]) -> None:
    path, data = shard
    got = {}
    for e in w.load((path, i * 7, 7) for i in range(50)):
        with e:
            got[e.tag] = e.get_data()
    assert got == {i: data[i * 7:i * 7 + 7] for i in range(50)}


def test_loader_options_come_from_the_c_table() -> None:
    from asyncload import _options

    names = [o.name for o in _options.OPTIONS]
    assert names[:3] == ["queue_depth", "max_file_size", "n_workers"]
    assert {"direct", "root", "n_threads"} <= set(names)
    with pytest.raises(TypeError, match="unexpected keyword argument 'no_such'"):
        asyncload.Loader(4, 4096, 1, no_such=1)
    with pytest.raises(TypeError, match="missing"):
        asyncload.Loader(4, 4096)
    q = next(o for o in _options.OPTIONS if o.name == "queue_depth")
    with pytest.raises(ValueError, match=f"queue_depth is too large .*at most {q.max}"):
        asyncload.Loader(q.max + 1, 4096, 1)
    e = next(o for o in _options.OPTIONS if o.name == "engine")
    assert e.choices == ("auto", "io_uring", "threads") and e.default == "auto"
    with pytest.raises(ValueError, match="engine must be one of 'auto', 'io_uring', 'threads'"):
        asyncload.Loader(4, 4096, 1, engine="fast")
    ld = asyncload.Loader(4, 4096, 1)
    try:
        opts = ld.options
        assert set(opts) == set(names)
        for o in _options.OPTIONS:
            # n_threads reads back resolved (0 asks for "one per CPU")
            if o.name not in ("queue_depth", "max_file_size", "n_workers", "n_threads"):
                assert opts[o.name] == o.default, o.name
        assert opts["n_threads"] >= 1
    finally:
        ld.close()
