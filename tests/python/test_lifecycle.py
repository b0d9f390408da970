"""Starting, stopping and tearing down loaders: shutdown, a killed loader,
Ctrl-C, become_loader, and no leaked fds, mappings or processes."""

from __future__ import annotations

import gc
import os
import pathlib
import signal
import subprocess
import sys
import textwrap
import threading
import time
from typing import Dict, List, Optional

import pytest

import asyncload
from al_testutil import child_count, fd_count, load_and_check, memfd_mappings

PYTHON_PATH = os.pathsep.join(p for p in sys.path if p)


def test_context_manager_spawns_and_reaps(files: Dict[str, bytes]) -> None:
    with asyncload.Loader(4, 1 << 20, 1) as ld:
        assert ld.running
        pid = ld.pid
        assert pid is not None and pid > 0
        assert load_and_check(ld.get_worker_context(0), files) == []
    assert ld.closed and not ld.running
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # already reaped by close()


def test_close_is_idempotent_and_final() -> None:
    ld = asyncload.Loader(2, 4096, 1)
    w = ld.get_worker_context(0)
    ld.close()
    ld.close()
    ld.shutdown()  # no-op once closed
    with pytest.raises(asyncload.LoaderClosedError):
        ld.spawn_loader()
    with pytest.raises(asyncload.LoaderClosedError):
        w.request("x")
    with pytest.raises(asyncload.LoaderClosedError):
        ld.get_worker_context(0)


def test_shutdown_wakes_waiters(tmp_path: pathlib.Path) -> None:
    with asyncload.Loader(4, 4096, 1) as ld:
        w = ld.get_worker_context(0)
        result: List[BaseException] = []

        def wait() -> None:
            try:
                w.wait_get()
            except BaseException as exc:  # noqa: BLE001 - recorded for the assert
                result.append(exc)

        t = threading.Thread(target=wait)
        t.start()
        time.sleep(0.2)
        t0 = time.monotonic()
        ld.shutdown()
        t.join(5)
        assert not t.is_alive()
        assert time.monotonic() - t0 < 1.5
        assert len(result) == 1 and isinstance(result[0], asyncload.LoaderClosedError)
        assert isinstance(result[0], BrokenPipeError)
        assert result[0].errno == __import__("errno").ESHUTDOWN
        with pytest.raises(asyncload.LoaderClosedError):
            w.request(tmp_path)
        with pytest.raises(asyncload.LoaderClosedError):
            w.wait_get(timeout=1)
        assert not ld.running


def test_killed_loader_surfaces(tmp_path: pathlib.Path) -> None:
    ld = asyncload.Loader(4, 4096, 1)
    pid = ld.spawn_loader()
    w = ld.get_worker_context(0)
    (tmp_path / "f").write_bytes(b"f")
    w.request(tmp_path / "f")
    w.wait_get(timeout=5).release()
    errors: List[BaseException] = []

    def wait() -> None:
        try:
            w.wait_get()
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    t = threading.Thread(target=wait)
    t.start()
    time.sleep(0.2)
    os.kill(pid, signal.SIGKILL)
    t0 = time.monotonic()
    t.join(5)
    assert not t.is_alive(), "waiter hangs after the loader died"
    assert time.monotonic() - t0 < 1.5
    assert errors and isinstance(errors[0], asyncload.LoaderClosedError)
    with pytest.raises(asyncload.LoaderClosedError):
        w.request(tmp_path / "f")
    assert not ld.running
    t0 = time.monotonic()
    ld.close()
    assert time.monotonic() - t0 < 2
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def test_requests_queued_at_shutdown_complete_once(tmp_path: pathlib.Path) -> None:
    p = tmp_path / "f"
    p.write_bytes(b"x" * 1000)
    with asyncload.Loader(16, 4096, 1) as ld:
        w = ld.get_worker_context(0)
        for _ in range(16):
            assert w.request(p)
        ld.shutdown()
        got = 0
        while True:
            try:
                e = w.wait_get(timeout=5)
            except asyncload.LoaderClosedError:
                break
            with e:  # either loaded or failed with ESHUTDOWN, never lost
                assert e.error in (0, __import__("errno").ESHUTDOWN)
            got += 1
        assert got == 16


def test_become_loader_in_thread(files: Dict[str, bytes]) -> None:
    ld = asyncload.Loader(4, 1 << 20, 1)
    t = threading.Thread(target=ld.become_loader)
    t.start()
    try:
        deadline = time.monotonic() + 5
        while not ld.running and time.monotonic() < deadline:
            time.sleep(0.01)
        assert ld.running
        assert ld.pid is None
        assert load_and_check(ld.get_worker_context(0), files) == []
        ld.shutdown()
        t.join(5)
        assert not t.is_alive()
    finally:
        ld.shutdown()
        t.join(5)
        ld.close()


def test_no_leaks_over_repeated_create_close(files: Dict[str, bytes]) -> None:
    path = sorted(files)[5]

    def cycle() -> None:
        with asyncload.Loader(4, 1 << 20, 2) as ld:
            w = ld.get_worker_context(0)
            w.request(path)
            with w.wait_get(timeout=5) as e:
                assert e.get_data() == files[path]
        ld2 = asyncload.Loader(2, 4096, 1)  # never started
        ld2.close()

    cycle()
    gc.collect()
    fds, maps, kids = fd_count(), memfd_mappings(), child_count(os.getpid())
    with open("/proc/self/statm") as f:
        vm0 = int(f.read().split()[0])
    for _ in range(15):
        cycle()
    gc.collect()
    with open("/proc/self/statm") as f:
        vm1 = int(f.read().split()[0])
    assert fd_count() == fds
    assert memfd_mappings() == maps
    assert child_count(os.getpid()) == kids
    assert (vm1 - vm0) * os.sysconf("SC_PAGE_SIZE") < 16 << 20


def test_dropped_loader_is_collected() -> None:
    fds, maps = fd_count(), memfd_mappings()
    ld: Optional[asyncload.Loader] = asyncload.Loader(2, 4096, 1)
    pid = ld.spawn_loader()
    ld.get_worker_context(0).in_flight
    ld = None  # ffi.gc backstop frees and reaps
    gc.collect()
    assert fd_count() == fds and memfd_mappings() == maps
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def _run_and_interrupt(script: str, marker: str = "ready") -> subprocess.CompletedProcess:
    """Run script in a fresh interpreter, SIGINT it after it prints `marker`."""
    env = dict(os.environ, PYTHONPATH=PYTHON_PATH)
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(script)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.strip() == marker, (line, proc.stderr.read() if proc.stderr else "")
        time.sleep(0.3)  # let it block in the C wait
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=5)
        elapsed = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert elapsed < 1.5, f"took {elapsed:.2f} s to react to SIGINT"
    return subprocess.CompletedProcess(proc.args, proc.returncode, line + out, err)


def test_ctrl_c_interrupts_wait_get() -> None:
    res = _run_and_interrupt("""
        import asyncload
        with asyncload.Loader(2, 4096, 1) as ld:
            w = ld.get_worker_context(0)
            print("ready", flush=True)
            try:
                w.wait_get()
            except KeyboardInterrupt:
                print("interrupted", flush=True)
    """)
    assert "interrupted" in res.stdout, res.stderr
    assert res.returncode == 0, res.stderr


def test_ctrl_c_stops_become_loader() -> None:
    res = _run_and_interrupt("""
        import asyncload
        ld = asyncload.Loader(2, 4096, 1)
        print("ready", flush=True)
        try:
            ld.become_loader()
        except KeyboardInterrupt:
            print("interrupted", flush=True)
        print("running" if ld.running else "stopped", flush=True)
        ld.close()
    """)
    assert "interrupted" in res.stdout and "stopped" in res.stdout, (res.stdout, res.stderr)
    assert res.returncode == 0, res.stderr


def test_close_stops_become_loader_thread() -> None:
    # close() must stop a loop running in this process before unmapping it
    ld = asyncload.Loader(4, 4096, 1)
    errors: List[BaseException] = []

    def run() -> None:
        try:
            ld.become_loader()
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    t = threading.Thread(target=run)
    t.start()
    deadline = time.monotonic() + 5
    while not ld.running and time.monotonic() < deadline:
        time.sleep(0.01)
    assert ld.running
    ld.close()
    t.join(5)
    assert not t.is_alive()
    assert errors == []


_CYCLE_AT_EXIT = r"""
import gc, sys
import asyncload
for mode in range(6):
    ld = asyncload.Loader(4, 1 << 16, 1)
    ld.spawn_loader()
    w = ld.get_worker_context(0)
    assert w.request(sys.argv[1])
    e = w.wait_get(timeout=5)
    cyc = [e, w, ld] if mode % 2 else [ld, w, e]
    cyc.append(cyc)  # garbage only the cycle collector frees, in its own order
    del ld, w, e, cyc
    if mode % 3 == 0:
        gc.collect()
print("ok")
"""


def test_loader_worker_entry_garbage_cycle(tmp_path: pathlib.Path) -> None:
    """A Loader, its Worker and an Entry dropped together in a reference
    cycle, collected by gc.collect() or at interpreter exit: the collector
    may free the C loader before the Worker's and Entry's finalizers run,
    which must then not touch it (this crashed with SIGSEGV)."""
    path = str(tmp_path / "f.txt")
    pathlib.Path(path).write_text("hello")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    r = subprocess.run([sys.executable, "-c", _CYCLE_AT_EXIT, path], env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "ok", (r.returncode, r.stderr[-2000:])
