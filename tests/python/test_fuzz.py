"""Property-based fuzzing of the asyncload Python API (hypothesis).

A state machine drives one worker through random sequences of request
(whole files and ranges, good and bad paths, weird bytes), try_get,
wait_get and release, and checks after every step that
  - every request is answered exactly once (and nothing unasked comes back),
  - the data of a successful load equals the file's bytes at that range,
  - an error is one the path can explain, and a good file never fails,
  - the worker's in_flight count and free entries match the model.
A second property feeds malformed and hostile handle strings to
Loader.attach. CI runs a few dozen examples (ASYNCLOAD_FUZZ_EXAMPLES raises
that for a longer local run).
"""

from __future__ import annotations

import errno
import os
import pathlib
import socket
import tempfile
import time
from typing import Any, Dict, List, Optional, Tuple

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, settings, strategies as st  # noqa: E402
from hypothesis.stateful import (  # noqa: E402
    RuleBasedStateMachine, initialize, invariant, precondition, rule,
)

import asyncload  # noqa: E402

EXAMPLES = int(os.environ.get("ASYNCLOAD_FUZZ_EXAMPLES", "25"))
QD = 4
MAX = 8192
WHOLE = 2**64 - 1

# errors a path outside the known files may legitimately get
_PATH_ERRORS = {errno.ENOENT, errno.ENAMETOOLONG, errno.ENOTDIR, errno.EISDIR,
                errno.ELOOP, errno.EINVAL, errno.EFBIG, errno.EACCES}


class _World:
    """Files and one loader shared by every example (starting a loader per
    example would spend the time budget on forks)."""

    def __init__(self) -> None:
        self.dir = pathlib.Path(tempfile.mkdtemp(prefix="asyncload-fuzz-"))
        self.files: Dict[bytes, bytes] = {}
        for i, size in enumerate((0, 1, 100, 4095, 4096, MAX - 1, MAX)):
            p = self.dir / f"g{i}"
            p.write_bytes(os.urandom(size))
            self.files[os.fsencode(str(p))] = p.read_bytes()
        (self.dir / "big").write_bytes(b"b" * (MAX + 1))
        (self.dir / "sub").mkdir()
        os.mkfifo(self.dir / "fifo")
        self.loader = asyncload.Loader(QD, MAX, 2)
        self.loader.spawn_loader()

    def close(self) -> None:
        self.loader.close()
        import shutil
        shutil.rmtree(self.dir, ignore_errors=True)


_world: Optional[_World] = None
# Every entry any example took: a failed example leaves some held, and the
# next one must start from a clean worker all the same.
_taken: List[asyncload.Entry] = []


@pytest.fixture(scope="module", autouse=True)
def world() -> Any:
    global _world
    _world = _World()
    yield _world
    _world.close()
    _world = None


def _paths() -> st.SearchStrategy:
    w = _world
    assert w is not None
    base = os.fsencode(str(w.dir)) + b"/"
    known = st.sampled_from(sorted(w.files))
    special = st.sampled_from([base + n for n in (b"big", b"sub", b"fifo", b"missing",
                                                  b"g1/", b"sub/..", b"./g2", b"sub/../g3")])
    weird = st.binary(min_size=1, max_size=300).map(lambda b: base + b)
    long = st.integers(4000, 4200).map(lambda n: base + b"x" * (n - len(base)))
    as_str = st.one_of(known, special).map(os.fsdecode)
    return st.one_of(known, known, known, special, weird, long, as_str)


_offsets = st.one_of(st.just(0), st.integers(0, MAX + 10), st.integers(0, 2**64 - 1),
                     st.sampled_from([2**31, 2**32, 2**63 - 1, 2**63, 2**64 - 1]))
_lengths = st.one_of(st.none(), st.integers(0, MAX + 10), st.just(WHOLE), st.integers(0, 2**64 - 1))


class WorkerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        assert _world is not None
        self.world = _world
        self.w = _world.loader.get_worker_context(0)
        # tag -> (path bytes, offset, expected outcome) of each request in flight
        self.pending: Dict[int, Tuple[bytes, int, Any]] = {}
        self.held: List[Tuple[asyncload.Entry, Any]] = []
        self.n_requests = 0

    def n_pending(self) -> int:
        return len(self.pending)

    def next_tag(self) -> int:
        """Distinct tags spread over 64 bits: 0 first, then scattered."""
        self.n_requests += 1
        return ((self.n_requests - 1) * 0x9E3779B97F4A7C15) % 2**64

    # -- model ----------------------------------------------------------------

    def expect(self, raw: bytes, offset: int, length: Optional[int]) -> Any:
        if length is not None and length != WHOLE and length > MAX:
            return ("err", {errno.EFBIG})
        content = self.world.files.get(raw)
        if content is None:
            for alias, name in ((b"/./g2", b"/g2"), (b"/sub/../g3", b"/g3")):
                if raw.endswith(alias):
                    content = self.world.files[raw[:-len(alias)] + name]
            if content is None:
                return ("err", _PATH_ERRORS | {0})
        end = None if length is None or length == WHOLE else offset + length
        return ("data", content[offset:end])

    def check(self, e: asyncload.Entry) -> None:
        assert e.tag in self.pending, f"answer nobody is waiting for: tag {e.tag}"
        raw, offset, exp = self.pending.pop(e.tag)
        key = (raw, offset)
        assert (os.fsencode(e.path), e.offset) == key, f"tag {e.tag}: answer of another request"
        if exp[0] == "data" and e.error == 0 and e.get_data() == exp[1]:
            return
        if exp[0] == "err" and e.error in exp[1]:
            if e.error == 0:
                # a path the model cannot predict loaded: it must be the file's bytes
                with open(raw, "rb") as f:
                    assert e.get_data() == os.pread(f.fileno(), e.size, offset) \
                        if offset < 2**63 else e.size == 0
            return
        raise AssertionError(f"{key!r}: error {e.error}, size {e.size}, expected "
                             f"{(exp[0], exp[1] if exp[0] == 'err' else len(exp[1]))}")

    # -- rules ----------------------------------------------------------------

    @initialize()
    def start_clean(self) -> None:
        for e in _taken:
            e.release()
        _taken.clear()
        while self.w.in_flight:  # leftovers of a failed example
            self.w.wait_get(timeout=10).release()
        assert self.w.try_get() is None

    @rule(path=st.deferred(_paths), offset=_offsets, length=_lengths)
    def request(self, path: Any, offset: int, length: Optional[int]) -> None:
        raw = os.fsencode(path)
        full = len(self.held) + self.n_pending() >= QD
        if b"\0" in raw:
            with pytest.raises(ValueError):
                self.w.request(path, offset, length)
            return
        if len(raw) >= asyncload.PATH_MAX:
            with pytest.raises(OSError) as info:
                self.w.request(path, offset, length)
            assert info.value.errno == errno.ENAMETOOLONG
            return
        exp = self.expect(raw, offset, length)
        tag = self.next_tag()
        ok = self.w.request(path, offset, length, tag=tag)
        if ok:
            self.pending[tag] = (raw, offset, exp)
        assert ok is (not full)

    @rule()
    def try_get(self) -> None:
        # Polls until something comes if anything is pending: the outcome must
        # not depend on timing, or hypothesis cannot replay an example.
        e = self.w.try_get()
        if self.n_pending() == 0:
            assert e is None
            return
        deadline = time.monotonic() + 10
        while e is None and time.monotonic() < deadline:
            time.sleep(0.0005)
            e = self.w.try_get()
        assert e is not None, "pending request never completed"
        _taken.append(e)
        self.check(e)
        self.held.append((e, None))

    @precondition(lambda self: self.n_pending() > 0)
    @rule()
    def wait_get(self) -> None:
        e = self.w.wait_get(timeout=10)
        _taken.append(e)
        self.check(e)
        self.held.append((e, None))

    @precondition(lambda self: len(self.held) > 0)
    @rule(i=st.integers(0, QD - 1), twice=st.booleans())
    def release(self, i: int, twice: bool) -> None:
        e, _ = self.held.pop(i % len(self.held))
        e.release()
        if twice:
            e.release()  # harmless
        with pytest.raises(ValueError):
            e.get_data()

    @invariant()
    def counts_match(self) -> None:
        assert self.w.in_flight == self.n_pending()
        assert len(self.held) + self.n_pending() <= QD

    def teardown(self) -> None:
        # everything asked for comes back, exactly once; nothing after that
        while self.n_pending():
            e = self.w.wait_get(timeout=10)
            _taken.append(e)
            with e:
                self.check(e)
        for e, _ in self.held:
            e.release()
        assert self.w.try_get() is None
        assert self.w.in_flight == 0


WorkerMachine.TestCase.settings = settings(
    max_examples=EXAMPLES, stateful_step_count=40, deadline=None, database=None,
    suppress_health_check=list(HealthCheck),
)
TestWorkerMachine = pytest.mark.deadline(120)(WorkerMachine.TestCase)


# ---------------------------------------------------------------- attach


@pytest.fixture(scope="module")
def hostile_fds() -> Any:
    """Descriptors of this process that are not asyncload regions."""
    r, w = os.pipe()
    s1, s2 = socket.socketpair()
    tmp = tempfile.TemporaryFile()
    tmp.write(os.urandom(1 << 16))
    tmp.flush()
    null = os.open("/dev/null", os.O_RDONLY)
    fds = [r, w, s1.fileno(), tmp.fileno(), null, 0, 1, 2, 9999]
    yield fds
    os.close(r)
    os.close(w)
    s1.close()
    s2.close()
    tmp.close()
    os.close(null)


@pytest.mark.deadline(60)
def test_attach_rejects_hostile_handles(hostile_fds: List[int], world: _World) -> None:
    """Handles naming a pipe, a socket, a random file, /dev/null, a missing
    process, a wrong token, or plain garbage: ValueError (malformed) or
    FileNotFoundError (no such loader), never a crash, hang or attachment."""
    good = world.loader.handle
    pid = os.getpid()
    gone = 2**31 - 1
    token = good.rsplit(":", 1)[1]

    @settings(max_examples=EXAMPLES * 4, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @hypothesis.given(st.one_of(
        st.text(max_size=140),
        st.binary(max_size=140),
        st.builds(lambda a, b, c, d, t: f"asyncload1:{a}:{b}:{c}:{d}:{t}",
                  st.sampled_from([pid, gone, 0, -1]), st.sampled_from(hostile_fds + [-5]),
                  st.sampled_from([pid, gone, 0]), st.sampled_from(hostile_fds),
                  st.one_of(st.just(token), st.text("0123456789abcdef", min_size=1, max_size=16))),
        st.builds(lambda s: good[:s] + good[s + 1:], st.integers(0, len(good) - 1)),
        st.builds(lambda s: good + s, st.text(min_size=1, max_size=5)),
    ))
    def prop(handle: Any) -> None:
        if handle == good:
            return
        try:
            other = asyncload.Loader.attach(handle)
        except (ValueError, FileNotFoundError, UnicodeEncodeError, TypeError):
            return
        except PermissionError:
            return
        # the only handle that may attach is one naming this very loader
        try:
            assert other.handle.rsplit(":", 1)[1] == token, handle
        finally:
            other.close()

    prop()
    # and the real loader is unharmed
    w = world.loader.get_worker_context(1)
    some = sorted(world.files)[3]
    assert w.request(some)
    with w.wait_get(timeout=5) as e:
        assert e.get_data() == world.files[some]
