"""Fault injection for asyncload: the loader, its creator or a worker dies,
shuts down or is signalled mid-flight; files change under the loader; the
process runs short of descriptors or memlock; the kernel refuses io_uring.

Each test states the outcome that docs/reliability.md promises for that
fault. Everything that could hang runs under a timeout (a bug must fail the
test, not stall CI); faults that would poison the pytest process (rlimits,
seccomp) are provoked in a subprocess.
"""

from __future__ import annotations

import ctypes
import errno
import json
import multiprocessing as mp
import os
import pathlib
import random
import signal
import struct
import subprocess
import sys
import textwrap
import threading
import time
from typing import Any, Dict, List, Optional, Tuple

import pytest

import asyncload
from al_testutil import children_of

# Forked children start in milliseconds and inherit the Loader object, which
# is what most fault scenarios need; pickling to spawn children is covered by
# the multiprocess tests.
CTX = mp.get_context("fork")
PYTHON_PATH = os.pathsep.join(p for p in sys.path if p)
CLOSED_WITHIN_S = 1.0



def start_waiter(w: Any) -> Tuple[threading.Thread, List[Any]]:
    """A thread asleep in w.wait_get(); out gets (exception, when it came)."""
    out: List[Any] = []

    def wait() -> None:
        try:
            w.wait_get()
        except BaseException as exc:  # noqa: BLE001 - checked by the caller
            out.append((exc, time.monotonic()))

    t = threading.Thread(target=wait)
    t.start()
    return t, out

# ---------------------------------------------------------------- /proc probes


def memfd_fds(pid: Any = "self") -> List[str]:
    """The asyncload regions that process pid holds open."""
    out = []
    base = f"/proc/{pid}/fd"
    for name in os.listdir(base):
        try:
            target = os.readlink(f"{base}/{name}")
        except OSError:
            continue
        if "memfd:asyncload" in target:
            out.append(f"{name} -> {target}")
    return out


def memfd_maps(pid: Any = "self") -> List[str]:
    with open(f"/proc/{pid}/maps") as f:
        return [line.strip() for line in f if "memfd:asyncload" in line]


def proc_state(pid: int) -> Optional[str]:
    """One-letter state of pid (R, S, Z ...), or None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2]


def wait_exited(pid: int, within: float) -> Optional[str]:
    """Poll until pid is a zombie or gone; returns the last state seen."""
    deadline = time.monotonic() + within
    state = proc_state(pid)
    while state not in (None, "Z", "X") and time.monotonic() < deadline:
        time.sleep(0.01)
        state = proc_state(pid)
    return state


def assert_nothing_left(before_children: List[Tuple[int, str]]) -> None:
    """No region fd, no mapping, and no new child process of this one."""
    assert memfd_fds() == []
    assert memfd_maps() == []
    new = [c for c in children_of(os.getpid()) if c not in before_children]
    assert new == [], f"processes left behind: {new}"


@pytest.fixture
def clean_process() -> Any:
    """Fails the test if it leaves an asyncload region or a child behind.

    Earlier tests in this process may legitimately still hold regions (a
    derived view keeps one mapped), so only what this test adds counts.
    """
    import gc
    gc.collect()
    fds0, maps0 = set(memfd_fds()), set(memfd_maps())
    kids0 = children_of(os.getpid())
    yield
    gc.collect()
    assert set(memfd_fds()) - fds0 == set()
    assert set(memfd_maps()) - maps0 == set()
    new = [c for c in children_of(os.getpid()) if c not in kids0]
    assert new == [], f"processes left behind: {new}"


def make_files(root: pathlib.Path, n: int, size: int, seed: int = 0) -> Dict[str, bytes]:
    root.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    out = {}
    for i in range(n):
        data = rng.randbytes(size if size >= 0 else rng.randrange(1, -size))
        p = root / f"f{i:03d}.bin"
        p.write_bytes(data)
        out[str(p)] = data
    return out


# ---------------------------------------------------------------- worker bodies
# These run in forked children and talk back through a Pipe.


def _drain_until_closed(w: asyncload.Worker, paths: List[str],
                        files: Dict[str, bytes]) -> Dict[str, Any]:
    """wait_get until LoaderClosedError; checks every entry on the way (the
    request for paths[i] was tagged i)."""
    got: List[Tuple[str, int]] = []
    bad: List[str] = []
    while True:
        try:
            e = w.wait_get(timeout=10)
        except asyncload.LoaderClosedError:
            return {"closed_at": time.monotonic(), "got": got, "bad": bad}
        except TimeoutError:
            return {"closed_at": None, "got": got, "bad": bad + ["wait_get timed out"]}
        with e:
            p = paths[e.tag]
            got.append((p, e.error))
            if e.path != p or (e.error == 0 and e.get_data() != files[p]):
                bad.append(f"{p}: wrong entry or bytes")


def _requester(loader: asyncload.Loader, wid: int, paths: List[str],
               files: Dict[str, bytes], conn: Any) -> None:
    w = loader.get_worker_context(wid)
    n = 0
    for i, p in enumerate(paths):
        if not w.request(p, tag=i):
            break
        n += 1
    conn.send(("ready", n))
    res = _drain_until_closed(w, paths, files)
    res["requested"] = paths[:n]
    conn.send(("done", res))


def _busy(loader: asyncload.Loader, wid: int, files: Dict[str, bytes], conn: Any) -> None:
    """Keeps its queue full until the loader goes away."""
    w = loader.get_worker_context(wid)
    paths = sorted(files)
    rng = random.Random(wid)
    answered = 0
    bad: List[str] = []
    conn.send(("ready", 0))
    try:
        while True:
            i = rng.randrange(len(paths))
            while w.request(paths[i], tag=i):
                i = rng.randrange(len(paths))
            with w.wait_get(timeout=10) as e:
                answered += 1
                p = paths[e.tag]
                if e.error == 0 and e.get_data() != files[p]:
                    bad.append(p)
                elif e.error not in (0, errno.ESHUTDOWN):
                    bad.append(f"{p}: errno {e.error}")
    except asyncload.LoaderClosedError:
        conn.send(("done", {"closed_at": time.monotonic(), "answered": answered, "bad": bad}))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent
        conn.send(("done", {"closed_at": None, "answered": answered, "bad": bad + [repr(exc)]}))


def _start(target: Any, *args: Any) -> Tuple[Any, Any]:
    parent, child = CTX.Pipe()
    p = CTX.Process(target=target, args=args + (child,), daemon=True)
    p.start()
    child.close()
    return p, parent


def _recv(conn: Any, timeout: float = 20) -> Any:
    if not conn.poll(timeout):
        raise AssertionError("child did not answer in time")
    return conn.recv()


# ---------------------------------------------------------------- loader killed


@pytest.mark.deadline(60)
def test_sigkill_loader_with_queued_requests(tmp_path: pathlib.Path, clean_process: Any) -> None:
    """Loader stopped (SIGSTOP) with full rings, then SIGKILLed: every worker
    gets its unread requests back as ESHUTDOWN entries, then LoaderClosedError,
    within a second; nothing is left behind once the creator closes."""
    files = make_files(tmp_path, 32, 50_000)
    paths = sorted(files)
    loader = asyncload.Loader(16, 1 << 20, 4)
    pid = loader.spawn_loader()
    os.kill(pid, signal.SIGSTOP)
    procs = [_start(_requester, loader, i, paths[i * 8:(i + 1) * 8] * 2, files) for i in range(4)]
    for _, conn in procs:
        assert _recv(conn) == ("ready", 16)
    time.sleep(0.2)  # all four asleep in wait_get
    t_kill = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    for p, conn in procs:
        tag, res = _recv(conn)
        assert res["bad"] == []
        assert res["closed_at"] is not None
        assert res["closed_at"] - t_kill < CLOSED_WITHIN_S
        # never read: each request comes back once, as ESHUTDOWN
        assert sorted(res["got"]) == sorted((q, errno.ESHUTDOWN) for q in res["requested"])
        p.join(10)
        assert p.exitcode == 0
    assert not loader.running
    loader.close()
    assert proc_state(pid) is None  # reaped by close()


@pytest.mark.deadline(60)
def test_sigkill_busy_loader(tmp_path: pathlib.Path, clean_process: Any) -> None:
    """Loader SIGKILLed while four workers keep 32 reads each in flight:
    every worker raises LoaderClosedError within a second and no entry it got
    before carried wrong bytes."""
    files = make_files(tmp_path, 64, 256 * 1024)
    loader = asyncload.Loader(32, 1 << 20, 4)
    pid = loader.spawn_loader()
    procs = [_start(_busy, loader, i, files) for i in range(4)]
    for _, conn in procs:
        _recv(conn)
    time.sleep(0.5)
    t_kill = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    total = 0
    for p, conn in procs:
        _, res = _recv(conn)
        assert res["bad"] == []
        assert res["closed_at"] is not None and res["closed_at"] - t_kill < CLOSED_WITHIN_S
        total += res["answered"]
        p.join(10)
    assert total > 0
    # the creator's own handle notices too
    w = loader.get_worker_context(0)
    with pytest.raises(asyncload.LoaderClosedError):
        w.wait_get(timeout=2)
    loader.close()


@pytest.mark.deadline(60)
def test_sigkill_loader_waiter_in_creator(clean_process: Any) -> None:
    """A thread of the creator asleep in wait_get (no request at all)."""
    loader = asyncload.Loader(4, 4096, 1)
    pid = loader.spawn_loader()
    w = loader.get_worker_context(0)
    t, out = start_waiter(w)
    time.sleep(0.2)
    t_kill = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    t.join(5)
    assert not t.is_alive()
    exc, at = out[0]
    assert isinstance(exc, asyncload.LoaderClosedError)
    assert at - t_kill < CLOSED_WITHIN_S
    with pytest.raises(asyncload.LoaderClosedError):
        w.request("/etc/hostname")
    loader.close()


# ---------------------------------------------------------------- creator killed

_CREATOR = textwrap.dedent("""
    import os, sys, time
    import asyncload
    L = asyncload.Loader(8, 1 << 20, 2)
    pid = L.spawn_loader()
    print(pid, L.handle, flush=True)
    if sys.argv[1] == "busy":
        w = L.get_worker_context(1)
        paths = sys.argv[2:]
        while True:
            while w.request(paths[0]):
                paths.append(paths.pop(0))
            w.wait_get().release()
    time.sleep(120)
""")


@pytest.mark.deadline(60)
@pytest.mark.parametrize("mode", ["idle", "busy"])
def test_creator_killed_loader_exits(tmp_path: pathlib.Path, mode: str, clean_process: Any) -> None:
    """Creator SIGKILLed: its spawned loader exits by itself within a second
    (it becomes a zombie of whoever adopts it, or disappears), and a worker
    attached from another process gets LoaderClosedError."""
    files = make_files(tmp_path, 8, 100_000)
    env = dict(os.environ, PYTHONPATH=PYTHON_PATH)
    creator = subprocess.Popen([sys.executable, "-c", _CREATOR, mode, *files],
                               stdout=subprocess.PIPE, text=True, env=env)
    try:
        line = creator.stdout.readline().split()
        pid, handle = int(line[0]), line[1]
        attached = asyncload.Loader.attach(handle)
        w = attached.get_worker_context(0)
        first = next(iter(files))
        assert w.request(first, tag=7)
        with w.wait_get(timeout=5) as e:
            assert e.tag == 7 and e.get_data() == files[first]
        t, out = start_waiter(w)
        time.sleep(0.3)
        t_kill = time.monotonic()
        creator.kill()
        creator.wait(5)
        state = wait_exited(pid, 5)
        took = time.monotonic() - t_kill
        assert state in (None, "Z", "X"), f"loader {pid} still {state}"
        assert took < CLOSED_WITHIN_S, f"loader outlived its creator by {took:.2f} s"
        t.join(5)
        assert isinstance(out[0][0], asyncload.LoaderClosedError)
        assert out[0][1] - t_kill < CLOSED_WITHIN_S + 0.2
        attached.close()
    finally:
        creator.kill()
        creator.wait()


# ---------------------------------------------------------------- worker killed


def _holder(loader: asyncload.Loader, paths: List[str], keep: int, conn: Any) -> None:
    """Claims worker 0, requests every path, takes `keep` entries and never
    releases them, then waits to be killed."""
    w = loader.get_worker_context(0)
    for p in paths:
        assert w.request(p)
    held = [w.wait_get(timeout=10) for _ in range(keep)]
    conn.send(("holding", len(held)))
    time.sleep(120)


def _loop_checked(loader: asyncload.Loader, wid: int, files: Dict[str, bytes],
                  seconds: float, conn: Any) -> None:
    w = loader.get_worker_context(wid)
    paths = sorted(files)
    end = time.monotonic() + seconds
    n, bad = 0, []
    conn.send(("ready", 0))
    while time.monotonic() < end:
        for e in w.load(paths):
            with e:
                n += 1
                if e.error or e.get_data() != files[paths[e.tag]]:
                    bad.append(paths[e.tag])
    conn.send(("done", {"n": n, "bad": bad}))


def _taker(loader: asyncload.Loader, paths: List[str], files: Dict[str, bytes], conn: Any) -> None:
    """Claims worker 0 after its holder died; requests queue_depth paths
    without releasing anything first."""
    try:
        w = loader.get_worker_context(0)
        accepted = [w.request(p, tag=i) for i, p in enumerate(paths)]
        extra = w.request(paths[0])
        got = []
        for _ in range(sum(accepted)):
            with w.wait_get(timeout=10) as e:
                p = paths[e.tag]
                got.append((p, e.error, e.error == 0 and e.get_data() == files[p]))
        try:
            w.wait_get(timeout=0.3)
            stray = True
        except TimeoutError:
            stray = False
        conn.send(("done", {"accepted": accepted, "extra": extra, "got": got, "stray": stray}))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent
        conn.send(("error", repr(exc)))


@pytest.mark.deadline(60)
@pytest.mark.parametrize("keep,reap", [(8, True), (4, True), (0, False), (8, False)],
                         ids=["held-all", "held-half", "in-ring-zombie", "held-all-zombie"])
def test_worker_killed_holding_entries(tmp_path: pathlib.Path, keep: int, reap: bool,
                                       clean_process: Any) -> None:
    """A worker SIGKILLed while holding `keep` of its 8 entries (the rest
    completed but never taken): workers 1 and 2 in other processes go on with
    correct bytes, and a new process that claims worker 0 (the dead one
    reaped, or still a zombie) can queue all 8 requests at once, gets exactly
    its own 8 files back, and nothing of the dead holder's."""
    old = make_files(tmp_path / "old", 8, 64 * 1024, seed=1)
    new = make_files(tmp_path / "new", 8, 64 * 1024, seed=2)
    others = make_files(tmp_path / "others", 16, -200_000, seed=3)
    with asyncload.Loader(8, 1 << 20, 3) as loader:
        busy = [_start(_loop_checked, loader, i, others, 2.0) for i in (1, 2)]
        for _, conn in busy:
            _recv(conn)
        holder, hconn = _start(_holder, loader, sorted(old), keep)
        assert _recv(hconn) == ("holding", keep)
        time.sleep(0.2)  # the entries it did not take have completed too
        os.kill(holder.pid, signal.SIGKILL)
        if reap:
            holder.join(5)
        else:
            assert wait_exited(holder.pid, 5) == "Z"
        taker, tconn = _start(_taker, loader, sorted(new), {**old, **new})
        tag, res = _recv(tconn)
        assert tag == "done", res
        assert res["accepted"] == [True] * 8, "queue depth not given back on takeover"
        assert res["extra"] is False
        assert sorted(p for p, _, _ in res["got"]) == sorted(new)
        assert all(err == 0 and ok for _, err, ok in res["got"]), res["got"]
        assert res["stray"] is False
        taker.join(5)
        holder.join(5)
        for p, conn in busy:
            _, r = _recv(conn)
            assert r["bad"] == [] and r["n"] > 0
            p.join(5)


# ---------------------------------------------------------------- shutdown


@pytest.mark.deadline(60)
@pytest.mark.parametrize("delay", [0.0, 0.002, 0.02])
def test_shutdown_with_requests_in_flight(tmp_path: pathlib.Path, delay: float,
                                          clean_process: Any) -> None:
    """shutdown() while 4 workers have 32 requests each queued or being read:
    every request is answered exactly once (bytes or ESHUTDOWN), then
    LoaderClosedError, and later requests are refused."""
    files = make_files(tmp_path, 64, 512 * 1024)
    paths = sorted(files)
    loader = asyncload.Loader(32, 1 << 20, 4)
    loader.spawn_loader()
    procs = [_start(_requester, loader, i, paths[i * 16:(i + 1) * 16] * 2, files) for i in range(4)]
    for _, conn in procs:
        assert _recv(conn) == ("ready", 32)
    time.sleep(delay)
    loader.shutdown()
    seen = {"ok": 0, "shutdown": 0}
    for p, conn in procs:
        _, res = _recv(conn)
        assert res["bad"] == []
        assert sorted(path for path, _ in res["got"]) == sorted(res["requested"])
        for _, err in res["got"]:
            assert err in (0, errno.ESHUTDOWN)
            seen["ok" if err == 0 else "shutdown"] += 1
        p.join(5)
    assert seen["ok"] + seen["shutdown"] == 128
    w = loader.get_worker_context(0)
    with pytest.raises(asyncload.LoaderClosedError):
        w.request(paths[0])
    loader.close()


# ---------------------------------------------------------------- signals


@pytest.mark.deadline(60)
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_is_a_clean_shutdown(tmp_path: pathlib.Path, sig: int, clean_process: Any) -> None:
    """SIGTERM (and SIGHUP) to the loader: it answers what it holds, exits 0,
    and waiting workers get LoaderClosedError within a second."""
    files = make_files(tmp_path, 32, 128 * 1024)
    paths = sorted(files)
    loader = asyncload.Loader(16, 1 << 20, 2)
    pid = loader.spawn_loader()
    procs = [_start(_requester, loader, i, paths[i * 16:(i + 1) * 16], files) for i in range(2)]
    for _, conn in procs:
        _recv(conn)
    t_sig = time.monotonic()
    os.kill(pid, sig)
    for p, conn in procs:
        _, res = _recv(conn)
        assert res["bad"] == []
        assert res["closed_at"] is not None and res["closed_at"] - t_sig < CLOSED_WITHIN_S
        assert sorted(q for q, _ in res["got"]) == sorted(res["requested"])
        p.join(5)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    assert not loader.running
    loader.close()


@pytest.mark.deadline(60)
def test_sigint_is_ignored(tmp_path: pathlib.Path, clean_process: Any) -> None:
    """SIGINT to the loader is ignored by design (Ctrl-C reaches the whole
    process group; the creator decides): it keeps serving."""
    files = make_files(tmp_path, 16, 32 * 1024)
    with asyncload.Loader(8, 1 << 20, 1) as loader:
        for _ in range(3):
            os.kill(loader.pid, signal.SIGINT)
        time.sleep(0.3)
        assert proc_state(loader.pid) in ("S", "R")
        assert loader.running
        w = loader.get_worker_context(0)
        paths = sorted(files)
        for e in w.load(paths):
            with e:
                assert e.get_data() == files[paths[e.tag]]


# ---------------------------------------------------------------- files changing


@pytest.mark.deadline(60)
def test_files_change_between_request_and_read(tmp_path: pathlib.Path, clean_process: Any) -> None:
    """Requests queued while the loader is stopped; then the files are
    deleted, truncated, grown, replaced by a directory or a FIFO before it
    reads them. Each gets the state it finds: a clean error or exactly the
    current bytes."""
    mx = 64 * 1024
    pat = random.Random(5).randbytes(4 * mx)
    names = ["deleted", "truncated", "grown", "overgrown", "to_dir", "to_fifo", "to_empty", "same"]
    for n in names:
        (tmp_path / n).write_bytes(pat[:mx // 2])
    loader = asyncload.Loader(16, mx, 1)
    pid = loader.spawn_loader()
    w = loader.get_worker_context(0)
    os.kill(pid, signal.SIGSTOP)
    try:
        for n in names:
            assert w.request(tmp_path / n)
        (tmp_path / "deleted").unlink()
        os.truncate(tmp_path / "truncated", 1000)
        with open(tmp_path / "grown", "ab") as f:
            f.write(pat[mx // 2:mx])
        with open(tmp_path / "overgrown", "ab") as f:
            f.write(pat[mx // 2:mx + 1])
        (tmp_path / "to_dir").unlink()
        (tmp_path / "to_dir").mkdir()
        (tmp_path / "to_fifo").unlink()
        os.mkfifo(tmp_path / "to_fifo")
        os.truncate(tmp_path / "to_empty", 0)
    finally:
        os.kill(pid, signal.SIGCONT)
    got: Dict[str, Tuple[int, bytes]] = {}
    for _ in names:
        with w.wait_get(timeout=5) as e:
            got[os.path.basename(e.path)] = (e.error, e.get_data() if e.ok else b"")
    assert got == {
        "deleted": (errno.ENOENT, b""),
        "truncated": (0, pat[:1000]),
        "grown": (0, pat[:mx]),
        "overgrown": (errno.EFBIG, b""),
        "to_dir": (errno.EISDIR, b""),
        "to_fifo": (errno.EINVAL, b""),
        "to_empty": (0, b""),
        "same": (0, pat[:mx // 2]),
    }
    loader.close()


@pytest.mark.deadline(60)
@pytest.mark.parametrize("shrink", [False, True], ids=["grow-replace-delete", "with-truncate"])
def test_files_change_during_reads(tmp_path: pathlib.Path, shrink: bool,
                                   clean_process: Any) -> None:
    """A thread rewrites files while they are being read: appends past
    max_file_size, swaps them for a new inode by rename, deletes and
    recreates them, and (second case) truncates them in place. Every answer
    is a clean error (ENOENT, EFBIG) or a size within the limit whose bytes
    were in the file: the content is always a prefix of one pattern.

    The one exception is the kernel's, not ours: a read racing an in-place
    truncate may return zeros for the part cut off after the size was
    taken (read(2) does the same on ext4 and tmpfs). So with truncation a
    differing byte must be 0; any other byte is garbage and fails."""
    mx = 256 * 1024
    pat = random.Random(6).randbytes(2 * mx)
    targets = [tmp_path / f"m{i}" for i in range(4)]
    for t in targets:
        t.write_bytes(pat[:mx // 2])
    stop = threading.Event()

    def mutate() -> None:
        rng = random.Random(7)
        while not stop.is_set():
            t = rng.choice(targets)
            op = rng.randrange(4 if shrink else 3)
            n = rng.randrange(0, 2 * mx)
            if op == 0:  # append until n bytes (maybe past the limit)
                with open(t, "ab") as f:
                    size = f.tell()
                    if n > size:
                        f.write(pat[size:n])
            elif op == 1:  # a new inode with another length
                tmp = t.with_suffix(".tmp")
                tmp.write_bytes(pat[:n])
                os.rename(tmp, t)
            elif op == 2:
                try:
                    t.unlink()
                except FileNotFoundError:
                    pass
                tmp = t.with_suffix(".tmp")
                tmp.write_bytes(pat[:n // 4])
                os.rename(tmp, t)
            else:  # shrink in place
                try:
                    if n < os.path.getsize(t):
                        os.truncate(t, n)
                except FileNotFoundError:
                    pass

    th = threading.Thread(target=mutate, daemon=True)
    counts = {"ok": 0, "ENOENT": 0, "EFBIG": 0, "torn": 0}
    bad: List[str] = []
    with asyncload.Loader(16, mx, 1) as loader:
        w = loader.get_worker_context(0)
        th.start()
        try:
            end = time.monotonic() + 3
            reqs = [str(t) for t in targets] * 4
            while time.monotonic() < end:
                for e in w.load(reqs):
                    with e:
                        if e.error:
                            name = errno.errorcode.get(e.error, str(e.error))
                            if name not in counts:
                                bad.append(f"{e.path}: {name}")
                            else:
                                counts[name] += 1
                            continue
                        counts["ok"] += 1
                        data = e.get_data()
                        if len(data) != e.size or e.size > mx:
                            bad.append(f"{e.path}: size {e.size} but {len(data)} bytes")
                        elif data != pat[:e.size]:
                            diff = [i for i in range(len(data)) if data[i] != pat[i]]
                            if shrink and all(data[i] == 0 for i in diff):
                                counts["torn"] += 1
                            else:
                                bad.append(f"{e.path}: size {e.size}, {len(diff)} wrong bytes "
                                           f"at {diff[0]}..{diff[-1]}")
        finally:
            stop.set()
            th.join(5)
    assert bad == [], bad[:5]
    assert counts["ok"] > 0


# ---------------------------------------------------------------- resource limits

_LIMITED = textwrap.dedent("""
    import errno, json, os, resource, sys
    import asyncload
    kind, value, root = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    confine = sys.argv[4] == "confined"
    paths = sorted(os.path.join(root, n) for n in os.listdir(root))
    data = {p: open(p, "rb").read() for p in paths}
    res = {"stage": "limit"}
    if kind == "nofile":
        if value == 0:  # exactly the descriptors already open: none to spare
            value = len(os.listdir("/proc/self/fd")) - 1
        resource.setrlimit(resource.RLIMIT_NOFILE, (value, value))
    else:
        resource.setrlimit(resource.RLIMIT_MEMLOCK, (value, value))
    try:
        res["stage"] = "new"
        L = asyncload.Loader(64, 1 << 20, 2, root=root if confine else None)
        res["stage"] = "spawn"
        L.spawn_loader()
        res["stage"] = "load"
        bad, n = [], 0
        for wid in (0, 1):
            w = L.get_worker_context(wid)
            reqs = [os.path.basename(p) for p in paths] if confine else paths
            for e in w.load(reqs):
                with e:
                    n += 1
                    full = os.path.join(root, e.path)
                    if e.error or e.get_data() != data[full]:
                        bad.append((e.path, e.error))
        L.close()
        res.update(stage="done", n=n, bad=bad)
    except OSError as exc:
        res.update(error=exc.errno, msg=str(exc), type=type(exc).__name__)
    print(json.dumps(res))
""")


def _run_limited(kind: str, value: int, root: pathlib.Path, confined: bool) -> Dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=PYTHON_PATH)
    r = subprocess.run([sys.executable, "-c", _LIMITED, kind, str(value), str(root),
                        "confined" if confined else "open"],
                       capture_output=True, text=True, env=env, timeout=30)
    assert r.returncode == 0, f"crashed ({r.returncode}): {r.stderr[-2000:]}"
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.mark.deadline(120)
@pytest.mark.parametrize("confined", [False, True], ids=["open", "confined"])
@pytest.mark.parametrize("nofile", [0, 16, 32])
def test_low_rlimit_nofile(tmp_path: pathlib.Path, nofile: int, confined: bool) -> None:
    """RLIMIT_NOFILE of 16 or 32 (soft = hard, so the loader cannot raise it)
    with 2 x 64 requests in flight: every file still loads (the loader bounds
    the files it holds open). With no descriptor to spare at all, Loader()
    fails with EMFILE: a clear error, not a crash or a hang."""
    make_files(tmp_path / "d", 40, -100_000)
    res = _run_limited("nofile", nofile, tmp_path / "d", confined)
    if nofile == 0:
        assert res["stage"] in ("new", "spawn") and res["error"] == errno.EMFILE, res
    else:
        assert res["stage"] == "done", res
        assert res["n"] == 80 and res["bad"] == []


@pytest.mark.deadline(60)
@pytest.mark.parametrize("memlock", [0, 4096])
def test_low_rlimit_memlock(tmp_path: pathlib.Path, memlock: int) -> None:
    """RLIMIT_MEMLOCK 0 or one page: the loader either serves normally
    (kernels >= 5.12 charge io_uring rings to the memory cgroup instead) or
    fails to start with a clear errno."""
    make_files(tmp_path / "d", 20, -100_000)
    res = _run_limited("memlock", memlock, tmp_path / "d", False)
    if res["stage"] == "done":
        assert res["n"] == 40 and res["bad"] == []
    else:
        assert res["stage"] == "spawn" and res["error"] in (errno.ENOMEM, errno.EPERM), res


# ---------------------------------------------------------------- io_uring refused

_SECCOMP = textwrap.dedent("""
    import ctypes, errno, json, struct, sys, threading, time
    import asyncload
    err = int(sys.argv[1])
    # classic BPF: refuse io_uring_setup (425 on every architecture) with err
    LD, JEQ, RET = 0x20, 0x15, 0x06
    prog = [(LD, 0, 0, 0), (JEQ, 0, 1, 425),
            (RET, 0, 0, 0x00050000 | err), (RET, 0, 0, 0x7fff0000)]
    raw = b"".join(struct.pack("HBBI", *i) for i in prog)
    buf = ctypes.create_string_buffer(raw)
    class Fprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]
    fp = Fprog(len(prog), ctypes.addressof(buf))
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.prctl(38, 1, 0, 0, 0) == 0  # PR_SET_NO_NEW_PRIVS
    assert libc.prctl(22, 2, ctypes.byref(fp), 0, 0) == 0, ctypes.get_errno()  # SECCOMP_MODE_FILTER
    res = {}
    # engine="io_uring": refused means an error; "auto" would run on threads
    L = asyncload.Loader(4, 4096, 1, engine="io_uring")
    w = L.get_worker_context(0)
    w.request("/etc/hostname")  # queued before the failed start
    t0 = time.monotonic()
    try:
        L.spawn_loader()
        res["spawn"] = "ok"
    except OSError as exc:
        res["spawn"] = [type(exc).__name__, exc.errno, str(exc)]
    res["took"] = time.monotonic() - t0
    res["running"] = L.running
    try:
        e = w.wait_get(timeout=2)
        res["wait"] = ["entry", e.error]
        w.wait_get(timeout=2)
    except Exception as exc:
        res["wait"] = res.get("wait", []) + [type(exc).__name__]
    L2 = asyncload.Loader(4, 4096, 1, engine="io_uring")
    try:
        L2.become_loader()
        res["become"] = "ok"
    except OSError as exc:
        res["become"] = [type(exc).__name__, exc.errno]
    L.close(); L2.close()
    print(json.dumps(res))
""")


@pytest.mark.deadline(60)
@pytest.mark.parametrize("err", [errno.ENOSYS, errno.EPERM])
def test_io_uring_refused_by_seccomp(err: int) -> None:
    """io_uring_setup refused (a seccomp filter, as container runtimes
    install): spawn_loader and become_loader raise OSError with that errno at
    once; a request queued before gets ESHUTDOWN, then LoaderClosedError."""
    env = dict(os.environ, PYTHONPATH=PYTHON_PATH)
    r = subprocess.run([sys.executable, "-c", _SECCOMP, str(err)],
                       capture_output=True, text=True, env=env, timeout=30)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert res["spawn"][1] == err, res
    assert res["took"] < 2.0
    assert res["running"] is False
    assert res["become"] == [res["spawn"][0], err]
    assert res["wait"] in (["entry", errno.ESHUTDOWN, "LoaderClosedError"], ["LoaderClosedError"]), res


_SYSCTL = "/proc/sys/kernel/io_uring_disabled"


@pytest.mark.deadline(60)
@pytest.mark.skipif(not os.path.exists(_SYSCTL) or os.geteuid() != 0,
                    reason="needs root and kernel.io_uring_disabled (Linux 6.6+)")
@pytest.mark.skipif(os.environ.get("ASYNCLOAD_TEST_NO_SYSCTL") == "1",
                    reason="ASYNCLOAD_TEST_NO_SYSCTL=1")
def test_io_uring_disabled_sysctl(clean_process: Any) -> None:
    """kernel.io_uring_disabled=2: spawn_loader raises PermissionError at
    once. The sysctl is machine-wide, so it is set only around the one call
    that needs it and always restored."""
    with open(_SYSCTL) as f:
        old = f.read().strip()
    loader = asyncload.Loader(4, 4096, 1, engine="io_uring")  # auto would fall back to threads
    try:
        try:
            with open(_SYSCTL, "w") as f:
                f.write("2")
        except OSError as exc:
            pytest.skip(f"cannot write {_SYSCTL}: {exc}")
        try:
            t0 = time.monotonic()
            with pytest.raises(OSError) as info:
                loader.spawn_loader()
            took = time.monotonic() - t0
        finally:
            with open(_SYSCTL, "w") as f:
                f.write(old)
        assert info.value.errno == errno.EPERM
        assert isinstance(info.value, PermissionError)
        assert took < 2.0
        assert not loader.running
        with pytest.raises(asyncload.LoaderClosedError):
            loader.get_worker_context(0).request("/etc/hostname")
    finally:
        loader.close()
    with open(_SYSCTL) as f:
        assert f.read().strip() == old
