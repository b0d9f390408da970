"""Per-request failures: each request completes exactly once, with its error,
promptly, and the error surfaces as LoadError with errno and filename."""

from __future__ import annotations

import errno
import os
import pathlib
import socket
import tempfile
import time

import pytest

import asyncload


def load_one(worker: asyncload.Worker, path: object, **kw: object) -> asyncload.Entry:
    assert worker.request(path, **kw)  # type: ignore[arg-type]
    return worker.wait_get(timeout=5)


def assert_fails(entry: asyncload.Entry, err: int) -> None:
    assert entry.error == err, (entry.path, os.strerror(entry.error) if entry.error else "ok")
    assert not entry.ok
    with pytest.raises(asyncload.LoadError) as ei:
        entry.get_data()
    assert ei.value.errno == err
    assert ei.value.filename == entry.path
    assert isinstance(ei.value, OSError)
    with pytest.raises(asyncload.LoadError):
        entry.data
    entry.release()


def test_missing_file(worker: asyncload.Worker, tmp_path: pathlib.Path) -> None:
    path = str(tmp_path / "nope.bin")
    e = load_one(worker, path)
    assert e.path == path
    assert_fails(e, errno.ENOENT)


def test_directory(worker: asyncload.Worker, tmp_path: pathlib.Path) -> None:
    assert_fails(load_one(worker, tmp_path), errno.EISDIR)


def test_fifo_fails_fast_and_never_blocks(worker: asyncload.Worker, tmp_path: pathlib.Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    t0 = time.monotonic()
    e = load_one(worker, fifo)  # nobody ever opens the writing end
    assert time.monotonic() - t0 < 1.0
    assert_fails(e, errno.EINVAL)


def test_socket_and_device_fail(worker: asyncload.Worker, tmp_path: pathlib.Path) -> None:
    sock_path = str(tmp_path / "sock")
    s = socket.socket(socket.AF_UNIX)
    s.bind(sock_path)
    try:
        assert_fails(load_one(worker, sock_path), errno.EINVAL)
    finally:
        s.close()
    assert_fails(load_one(worker, "/dev/zero"), errno.EINVAL)


def test_too_large(tmp_path: pathlib.Path) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(5000))
    with asyncload.Loader(queue_depth=2, max_file_size=4096, n_workers=1) as ld:
        w = ld.get_worker_context(0)
        assert_fails(load_one(w, big), errno.EFBIG)
        # a range inside the too-large file that fits is fine
        with load_one(w, big, offset=4096, length=100) as e:
            assert e.get_data() == big.read_bytes()[4096:4196]
        # a range longer than max_file_size fails even if the file is small
        small = tmp_path / "small.bin"
        small.write_bytes(b"x" * 10)
        assert_fails(load_one(w, small, offset=0, length=8192), errno.EFBIG)


def test_symlink_loop(worker: asyncload.Worker, tmp_path: pathlib.Path) -> None:
    os.symlink(tmp_path / "b", tmp_path / "a")
    os.symlink(tmp_path / "a", tmp_path / "b")
    assert_fails(load_one(worker, tmp_path / "a"), errno.ELOOP)


def test_symlink_to_file_is_followed(worker: asyncload.Worker, tmp_path: pathlib.Path) -> None:
    (tmp_path / "target").write_bytes(b"via link")
    os.symlink(tmp_path / "target", tmp_path / "link")
    with load_one(worker, tmp_path / "link") as e:
        assert e.get_data() == b"via link"


def _permission_check(path: str) -> int:
    """Create a loader and load `path`; 0 if it failed with EACCES."""
    with asyncload.Loader(queue_depth=2, max_file_size=4096, n_workers=1) as ld:
        e = load_one(ld.get_worker_context(0), path)
        ok = e.error == errno.EACCES
        e.release()
    return 0 if ok else 1


def test_permission_denied() -> None:
    # The loader opens the files, so it must run unprivileged for this test:
    # as root, fork a child that drops to nobody and runs the loader itself.
    d = tempfile.mkdtemp(prefix="asyncload-perm-")
    try:
        os.chmod(d, 0o755)
        path = os.path.join(d, "secret.bin")
        with open(path, "wb") as f:
            f.write(b"secret")
        os.chmod(path, 0)
        if os.geteuid() != 0:
            assert _permission_check(path) == 0
            return
        pid = os.fork()
        if pid == 0:  # child
            status = 2
            try:
                os.setgroups([])
                os.setgid(65534)
                os.setuid(65534)
                status = _permission_check(path)
            finally:
                os._exit(status)
        _, st = os.waitpid(pid, 0)
        assert os.WIFEXITED(st) and os.WEXITSTATUS(st) == 0, (
            f"unprivileged loader did not report EACCES (status {st:#x})")
    finally:
        os.chmod(path, 0o600)
        os.unlink(path)
        os.rmdir(d)


def test_errors_and_successes_mixed(worker: asyncload.Worker, tmp_path: pathlib.Path) -> None:
    good = tmp_path / "good.bin"
    good.write_bytes(b"good")
    paths = [str(good), str(tmp_path / "missing"), str(tmp_path), str(good)]
    results = []
    for e in worker.load(paths):
        with e:
            results.append((e.path, e.error))
    assert sorted(results) == sorted([(str(good), 0), (str(good), 0),
                                      (str(tmp_path / "missing"), errno.ENOENT),
                                      (str(tmp_path), errno.EISDIR)])


def test_root_confinement(tmp_path: pathlib.Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "inside.bin").write_bytes(b"inside")
    (tmp_path / "outside.bin").write_bytes(b"outside")
    os.symlink(tmp_path / "outside.bin", root / "escape")
    with asyncload.Loader(queue_depth=4, max_file_size=4096, n_workers=1, root=root) as ld:
        w = ld.get_worker_context(0)
        with load_one(w, "inside.bin") as e:  # relative to root, not to cwd
            assert e.get_data() == b"inside"
        assert_fails(load_one(w, "../outside.bin"), errno.EXDEV)
        assert_fails(load_one(w, "escape"), errno.EXDEV)


def test_path_too_long(worker: asyncload.Worker) -> None:
    with pytest.raises(OSError) as ei:
        worker.request("/" + "x" * (asyncload.PATH_MAX + 10))
    assert ei.value.errno == errno.ENAMETOOLONG


def test_errors_pickle_with_errno_and_filename() -> None:
    # Exceptions cross process boundaries by pickle (multiprocessing pools,
    # concurrent.futures): errno, strerror and filename must survive.
    import pickle
    e = asyncload.LoadError(errno.ENOENT, "No such file or directory", "data/a.jpg")
    f = pickle.loads(pickle.dumps(e))
    assert type(f) is asyncload.LoadError
    assert (f.errno, f.strerror, f.filename) == (errno.ENOENT, "No such file or directory",
                                                 "data/a.jpg")
    c = pickle.loads(pickle.dumps(asyncload.LoaderClosedError("loader died")))
    assert type(c) is asyncload.LoaderClosedError
    assert (c.errno, c.strerror) == (errno.ESHUTDOWN, "loader died")
