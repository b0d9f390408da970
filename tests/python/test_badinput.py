"""Bad input for asyncload: paths that are not regular files, paths that are
malformed or too long, files at the size limits, permission denied, absurd
options, odd ranges, and path confinement (root=).

Every bad request must get its documented error (at request time for what
the worker can see, in the entry for what only the loader can), promptly and
without blocking, and the loader must keep serving everyone else: each
bad request is sandwiched between good ones, and a second worker keeps
loading good files meanwhile.
"""

from __future__ import annotations

import errno
import json
import os
import pathlib
import socket
import sys
import tempfile
import threading
import time
from typing import Any, Dict, Iterator, List, Optional, Tuple, Union

import pytest

import asyncload

PYTHON_PATH = os.pathsep.join(p for p in sys.path if p)
MAX = 64 * 1024  # max_file_size of the loaders below


# ---------------------------------------------------------------- fixtures


@pytest.fixture
def tree(tmp_path: pathlib.Path) -> Dict[str, Any]:
    """A directory with one of every kind of thing a path can name."""
    d = tmp_path
    good = {}
    for i in range(4):
        p = d / f"good{i}.bin"
        p.write_bytes(os.urandom(1000 * (i + 1)))
        good[str(p)] = p.read_bytes()
    (d / "empty").write_bytes(b"")
    (d / "at_max").write_bytes(b"m" * MAX)
    (d / "over_max").write_bytes(b"o" * (MAX + 1))
    (d / "dir").mkdir()
    os.mkfifo(d / "fifo")
    os.symlink("loop_b", d / "loop_a")
    os.symlink("loop_a", d / "loop_b")
    os.symlink("nowhere", d / "dangling")
    os.symlink("fifo", d / "link_to_fifo")
    os.symlink("good0.bin", d / "link_to_good")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(d / "sock"))
    sock.listen(1)
    raw = os.fsencode(str(d)) + b"/\xff\xfe-not-utf8.bin"
    with open(raw, "wb") as f:
        f.write(b"bytes name")
    yield {"dir": d, "good": good, "raw": raw}
    sock.close()


class Checker:
    """Worker 0 sends the requests under test, each between two good ones;
    worker 1 (a thread) keeps loading good files the whole time."""

    def __init__(self, loader: asyncload.Loader, good: Dict[str, bytes]) -> None:
        self.w = loader.get_worker_context(0)
        self.good = good
        self.stop = threading.Event()
        self.side_errors: List[str] = []
        self.side_count = 0
        self.t = threading.Thread(target=self._side, args=(loader.get_worker_context(1),))
        self.t.start()

    def _side(self, w: asyncload.Worker) -> None:
        paths = sorted(self.good)
        while not self.stop.is_set():
            for e in w.load(paths, timeout=5):
                with e:
                    self.side_count += 1
                    if e.error or e.get_data() != self.good[paths[e.tag]]:
                        self.side_errors.append(f"{paths[e.tag]}: {e.error}")

    def one(self, path: Any, *rng: Any) -> Tuple[int, bytes]:
        """(errno, bytes) of one request, checking its good neighbours."""
        g = sorted(self.good)
        # tags: the neighbours 0 and 2, the request under test 1
        assert self.w.request(g[0], tag=0)
        assert self.w.request(path, *rng, tag=1)
        assert self.w.request(g[1], tag=2)
        out: Dict[int, Tuple[int, bytes]] = {}
        t0 = time.monotonic()
        for _ in range(3):
            e = self.w.wait_get(timeout=5)
            with e:
                assert e.tag not in out, f"tag {e.tag} answered twice"
                out[e.tag] = (e.error, e.get_data() if e.ok else b"")
        assert time.monotonic() - t0 < 2, f"{path!r} took too long"
        assert out[0] == (0, self.good[g[0]])
        assert out[2] == (0, self.good[g[1]])
        return out[1]

    def close(self) -> None:
        self.stop.set()
        self.t.join(10)
        assert not self.t.is_alive()
        assert self.side_errors == []
        assert self.side_count > 0


@pytest.fixture
def checker(tree: Dict[str, Any]) -> Iterator[Checker]:
    with asyncload.Loader(8, MAX, 2) as loader:
        c = Checker(loader, tree["good"])
        yield c
        c.close()


# ---------------------------------------------------------------- what a path names


@pytest.mark.parametrize("name,err", [
    ("missing", errno.ENOENT),
    ("dir", errno.EISDIR),
    ("fifo", errno.EINVAL),
    ("sock", errno.EINVAL),
    ("loop_a", errno.ELOOP),
    ("dangling", errno.ENOENT),
    ("link_to_fifo", errno.EINVAL),
    ("over_max", errno.EFBIG),
    ("good0.bin/", errno.ENOTDIR),
    ("missing_dir/x", errno.ENOENT),
])
def test_not_a_loadable_file(tree: Dict[str, Any], checker: Checker, name: str, err: int) -> None:
    """Each fails fast with its errno; a FIFO is never opened (no hang)."""
    assert checker.one(str(tree["dir"]) + "/" + name) == (err, b"")


@pytest.mark.parametrize("path,err", [
    ("/dev/zero", errno.EINVAL),
    ("/dev/null", errno.EINVAL),
    ("/dev/urandom", errno.EINVAL),
    ("/proc/self/mem", errno.EIO),
    ("/proc/self/fd/0", errno.EINVAL),  # the loader's stdin: a tty, pipe or /dev/null
])
def test_devices_and_special_proc_files(checker: Checker, path: str, err: int) -> None:
    res = checker.one(path)
    assert res[0] in (err, errno.ENOENT, errno.EACCES), res


@pytest.mark.parametrize("path", ["/proc/self/status", "/proc/cpuinfo", "/proc/self/cmdline",
                                  "/sys/kernel/mm/transparent_hugepage/enabled"])
def test_proc_and_sys_files_load(checker: Checker, path: str) -> None:
    """Size 0 in statx, content on read: loaded until EOF (or EFBIG past
    max_file_size), never truncated to the reported 0 bytes."""
    if not os.path.exists(path):
        pytest.skip(f"{path} not here")
    err, data = checker.one(path)
    assert err in (0, errno.EFBIG)
    if err == 0:
        assert 0 < len(data) <= MAX
    if path == "/proc/self/status":
        assert data.startswith(b"Name:")


def test_big_proc_file_is_efbig(tree: Dict[str, Any]) -> None:
    """A /proc file longer than max_file_size: EFBIG, not a truncated copy."""
    with asyncload.Loader(2, 64, 1) as loader:
        w = loader.get_worker_context(0)
        assert w.request("/proc/self/status")
        with w.wait_get(timeout=5) as e:
            assert e.error == errno.EFBIG and e.size == 0


def test_size_limits(tree: Dict[str, Any], checker: Checker) -> None:
    d = tree["dir"]
    assert checker.one(str(d / "empty")) == (0, b"")
    assert checker.one(str(d / "at_max")) == (0, b"m" * MAX)
    assert checker.one(str(d / "over_max")) == (errno.EFBIG, b"")
    # the limit applies to the range, not to the file
    assert checker.one(str(d / "over_max"), 1, MAX) == (0, b"o" * MAX)
    assert checker.one(str(d / "over_max"), 0, MAX + 1) == (errno.EFBIG, b"")
    assert checker.one(str(d / "over_max"), 2) == (0, b"o" * (MAX - 1))


def test_symlink_to_good_file(tree: Dict[str, Any], checker: Checker) -> None:
    d = tree["dir"]
    assert checker.one(str(d / "link_to_good")) == (0, tree["good"][str(d / "good0.bin")])


def test_non_utf8_bytes_path(tree: Dict[str, Any], checker: Checker) -> None:
    """A bytes path that is not UTF-8 loads, and entry.path round-trips to it."""
    raw = tree["raw"]
    w = checker.w
    assert w.request(raw)
    with w.wait_get(timeout=5) as e:
        assert e.get_data() == b"bytes name"
        assert os.fsencode(e.path) == raw
    assert checker.one(raw) == (0, b"bytes name")
    # the same name given as a str with surrogate escapes
    assert checker.one(os.fsdecode(raw)) == (0, b"bytes name")
    assert checker.one(os.fsencode(str(tree["dir"])) + b"/\xff-missing") == (errno.ENOENT, b"")


# ---------------------------------------------------------------- refused at request time


@pytest.mark.parametrize("path,exc", [
    ("", ValueError),
    (b"", ValueError),
    ("a\0b", ValueError),
    (b"/tmp/\0", ValueError),
    (None, TypeError),
    (42, TypeError),
    (["/etc/hostname"], TypeError),
    (3.5, TypeError),
])
def test_malformed_paths_raise(checker: Checker, path: Any, exc: type) -> None:
    with pytest.raises(exc):
        checker.w.request(path)
    # nothing was queued, and the worker still works
    assert checker.w.in_flight == 0
    g = sorted(checker.good)[2]
    assert checker.one(g) == (0, checker.good[g])


def _long_path(base: pathlib.Path, total: int) -> str:
    """An absolute path of exactly `total` bytes (components of 200)."""
    p = str(base)
    while len(p) + 201 < total:
        p += "/" + "d" * 200
    return p + "/" + "f" * (total - len(p) - 1)


def test_paths_at_and_above_path_max(tmp_path: pathlib.Path, checker: Checker) -> None:
    """PATH_MAX (4096) counts the NUL: a 4095-byte path is accepted (and
    loads if it exists); 4096 and more raise ENAMETOOLONG at request time,
    as does a relative path that is too long once the cwd is prepended."""
    assert asyncload.PATH_MAX == 4096
    p = _long_path(tmp_path, 4095)
    assert len(os.fsencode(p)) == 4095
    os.makedirs(os.path.dirname(p))
    with open(p, "wb") as f:
        f.write(b"deep")
    assert checker.one(p) == (0, b"deep")
    for n in (4096, 4097, 10_000):
        with pytest.raises(OSError) as info:
            checker.w.request("/" + "a" * (n - 1))
        assert info.value.errno == errno.ENAMETOOLONG
    rel = "r" * (4095 - len(os.getcwd()))
    with pytest.raises(OSError) as info:
        checker.w.request(rel)
    assert info.value.errno == errno.ENAMETOOLONG
    # a component longer than NAME_MAX (255): the kernel says so, in the entry
    assert checker.one("/tmp/" + "n" * 300) == (errno.ENAMETOOLONG, b"")
    assert checker.w.in_flight == 0


# ---------------------------------------------------------------- ranges


@pytest.mark.parametrize("offset,length,want", [
    (0, 0, b""),
    (10, 5, "slice"),
    (2999, 2000, "slice"),
    (3999, None, "slice"),      # the last byte (good3.bin holds 4000)
    (4000, 10, b""),            # at EOF
    (5000, 10, b""),            # past EOF
    (2**62, 10, b""),
    (2**63 - 1, 1, b""),
    (2**63, 10, b""),           # beyond off_t
    (2**64 - 1, 10, b""),
    (0, 2**64 - 1, "slice"),    # ASYNCLOAD_WHOLE_FILE
    (0, 2**64 - 2, "slice"),    # huge, not "whole file": EFBIG by length
])
def test_range_parameters(tree: Dict[str, Any], checker: Checker, offset: int,
                          length: Optional[int], want: Any) -> None:
    """A range past the end of the file returns the bytes that exist (none),
    whatever the offset; a length above max_file_size is EFBIG."""
    p = str(tree["dir"] / "good3.bin")  # not one of the sandwiching files
    content = tree["good"][p]
    res = checker.one(p, offset, length)
    if length is not None and length != 2**64 - 1 and length > MAX:
        assert res == (errno.EFBIG, b"")
    elif want == "slice":
        end = None if length is None or length == 2**64 - 1 else offset + length
        assert res == (0, content[offset:end])
    else:
        assert res == (0, want)


@pytest.mark.parametrize("offset,length,exc", [
    (-1, 10, ValueError), (0, -1, ValueError), (2**64, 1, ValueError),
    (0, 2**64, ValueError), (1.0, 1, TypeError), (0, "5", TypeError),
])
def test_range_arguments_refused(tree: Dict[str, Any], checker: Checker, offset: Any,
                                 length: Any, exc: type) -> None:
    with pytest.raises(exc):
        checker.w.request(str(tree["dir"] / "good0.bin"), offset, length)
    assert checker.w.in_flight == 0


# ---------------------------------------------------------------- permissions

def _unprivileged_child(d: str) -> Dict[str, Any]:
    """Runs in a forked child after it dropped root (if it had it)."""
    out: Dict[str, Any] = {"uid": os.getuid()}
    for root in (None, d):
        with asyncload.Loader(4, 1 << 20, 1, root=root) as L:
            w = L.get_worker_context(0)
            for name in ("secret", "open", "locked/inside", "open", "secret"):
                w.request(name if root else os.path.join(d, name))
                e = w.wait_get(timeout=5)
                out[f"{bool(root)}:{name}"] = [e.error, e.get_data().decode() if e.ok else ""]
                e.release()
    try:
        with asyncload.Loader(4, 4096, 1, root=os.path.join(d, "locked")) as L:
            w = L.get_worker_context(0)
            w.request("inside")
            with w.wait_get(timeout=5) as e:
                out["locked_root"] = ["load", e.error]
    except OSError as exc:
        out["locked_root"] = ["new", exc.errno]
    return out


@pytest.mark.deadline(60)
def test_permission_denied() -> None:
    """Files the user cannot read get EACCES (in a forked child that drops
    root to nobody; the loader it spawns inherits its credentials), readable
    ones beside them still load, confined or not; a root directory the user
    cannot search gives EACCES (from Loader() or from every load)."""
    d = tempfile.mkdtemp(prefix="asyncload-perm-", dir="/tmp")
    try:
        os.chmod(d, 0o755)
        with open(os.path.join(d, "secret"), "w") as f:
            f.write("no")
        os.chmod(os.path.join(d, "secret"), 0o000)
        with open(os.path.join(d, "open"), "w") as f:
            f.write("yes")
        os.chmod(os.path.join(d, "open"), 0o644)
        os.mkdir(os.path.join(d, "locked"))
        with open(os.path.join(d, "locked", "inside"), "w") as f:
            f.write("no")
        os.chmod(os.path.join(d, "locked"), 0o000)
        rfd, wfd = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - child
            code = 1
            try:
                os.close(rfd)
                if os.geteuid() == 0:
                    os.setgroups([])
                    os.setgid(65534)
                    os.setuid(65534)
                os.write(wfd, json.dumps(_unprivileged_child(d)).encode())
                code = 0
            except BaseException as exc:  # noqa: BLE001 - reported through the pipe
                os.write(wfd, json.dumps({"error": repr(exc)}).encode())
            finally:
                os._exit(code)
        os.close(wfd)
        with os.fdopen(rfd, "rb") as f:
            raw = f.read()
        _, status = os.waitpid(pid, 0)
        out = json.loads(raw)
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, out
        assert out["uid"] != 0
        for confined in ("False", "True"):
            assert out[f"{confined}:secret"] == [errno.EACCES, ""]
            assert out[f"{confined}:locked/inside"] == [errno.EACCES, ""]
            assert out[f"{confined}:open"] == [0, "yes"]
        # O_PATH needs no search right on root itself: accepted, then EACCES
        assert out["locked_root"] in (["new", errno.EACCES], ["load", errno.EACCES])
    finally:
        os.chmod(os.path.join(d, "locked"), 0o755)
        import shutil
        shutil.rmtree(d)


# ---------------------------------------------------------------- options


@pytest.mark.parametrize("kw,exc", [
    (dict(queue_depth=0), ValueError),
    (dict(queue_depth=asyncload.MAX_QUEUE_DEPTH + 1), ValueError),
    (dict(queue_depth=2**32), ValueError),
    (dict(queue_depth=-1), ValueError),
    (dict(n_workers=0), ValueError),
    (dict(n_workers=asyncload.MAX_WORKERS + 1), ValueError),
    (dict(n_workers=2**40), ValueError),
    (dict(max_file_size=0), ValueError),
    (dict(max_file_size=asyncload.MAX_FILE_SIZE + 1), ValueError),
    (dict(max_file_size=2**64), ValueError),
    (dict(max_file_size=-5), ValueError),
    (dict(queue_depth=1024, n_workers=65), ValueError),  # > MAX_ENTRIES
    (dict(queue_depth=4.0), TypeError),
    (dict(n_workers="2"), TypeError),
    (dict(max_file_size=None), TypeError),
    (dict(dispatch_n=-1), ValueError),
    (dict(idle_iters=2**32), ValueError),
    (dict(direct="yes"), TypeError),
    (dict(root=""), ValueError),
    (dict(root="/nonexistent-asyncload"), FileNotFoundError),
    (dict(root="/etc/hostname"), NotADirectoryError),
    (dict(root="a\0b"), ValueError),
    (dict(root=5), TypeError),
])
def test_absurd_options_refused(kw: Dict[str, Any], exc: type) -> None:
    args = dict(queue_depth=4, max_file_size=4096, n_workers=1)
    args.update(kw)
    with pytest.raises(exc):
        asyncload.Loader(**args)


def test_region_beyond_address_space_is_enomem() -> None:
    """Each limit alone is fine, together they ask for 4 PiB of shared
    memory: a clean ENOMEM from Loader(), nothing mapped."""
    with pytest.raises(OSError) as info:
        asyncload.Loader(queue_depth=asyncload.MAX_QUEUE_DEPTH,
                         n_workers=asyncload.MAX_ENTRIES // asyncload.MAX_QUEUE_DEPTH,
                         max_file_size=asyncload.MAX_FILE_SIZE)
    assert info.value.errno == errno.ENOMEM


@pytest.mark.deadline(60)
@pytest.mark.parametrize("kw", [
    dict(queue_depth=1, n_workers=1, max_file_size=asyncload.MAX_FILE_SIZE),
    dict(queue_depth=64, n_workers=asyncload.MAX_WORKERS, max_file_size=4096),
    dict(queue_depth=asyncload.MAX_QUEUE_DEPTH,
         n_workers=asyncload.MAX_ENTRIES // asyncload.MAX_QUEUE_DEPTH, max_file_size=1),
    dict(queue_depth=1, n_workers=1, max_file_size=1),
], ids=["64GiB-entry", "1024-workers", "65536-entries", "tiny"])
def test_extreme_but_valid_options_work(tmp_path: pathlib.Path, kw: Dict[str, Any]) -> None:
    """At the limits the region is sparse: it starts, and the last worker
    loads a file (one byte, where max_file_size is 1). With dispatch_n and
    idle_iters at their maximum the loader still dispatches on idle polls
    (after the batching wait), never holds a request forever."""
    p = tmp_path / "one"
    p.write_bytes(b"x")
    with asyncload.Loader(**kw) as loader:
        w = loader.get_worker_context(loader.n_workers - 1)
        assert w.request(p)
        with w.wait_get(timeout=20) as e:
            assert e.get_data() == b"x"


@pytest.mark.deadline(60)
def test_batching_options_cannot_hold_a_request_forever(tmp_path: pathlib.Path) -> None:
    """dispatch_n beyond the entries that exist can never fill, and
    idle_iters = 2**32-1 polls of 50 us is days: Loader() must refuse the
    pair (ValueError) or the loader must still answer a lone request within
    seconds (the spec: nothing is held forever)."""
    p = tmp_path / "one"
    p.write_bytes(b"x")
    try:
        loader = asyncload.Loader(2, 4096, 1, dispatch_n=2**32 - 1, idle_iters=2**32 - 1)
    except ValueError:
        return
    with loader:
        w = loader.get_worker_context(0)
        assert w.request(p)
        with w.wait_get(timeout=10) as e:
            assert e.get_data() == b"x"


# ---------------------------------------------------------------- confinement


@pytest.fixture
def jail(tmp_path: pathlib.Path) -> Dict[str, Any]:
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "inner.bin").write_bytes(b"inside")
    (root / "sub" / "deep.bin").write_bytes(b"deeper")
    (tmp_path / "outside.bin").write_bytes(b"outside")
    os.symlink("inner.bin", root / "rel_in")
    os.symlink("../inner.bin", root / "sub" / "rel_up_in")
    os.symlink("../outside.bin", root / "rel_out")
    os.symlink(str(root / "inner.bin"), root / "abs_in")
    os.symlink(str(tmp_path / "outside.bin"), root / "abs_out")
    os.symlink("/etc/hostname", root / "abs_etc")
    os.symlink("sub", root / "dirlink")
    os.symlink("..", root / "sub" / "parent")
    os.mkfifo(root / "fifo")
    return {"root": root, "outside": tmp_path / "outside.bin"}


@pytest.mark.parametrize("path,want", [
    ("inner.bin", (0, b"inside")),
    ("./inner.bin", (0, b"inside")),
    ("sub/deep.bin", (0, b"deeper")),
    ("sub/../inner.bin", (0, b"inside")),
    ("sub//deep.bin", (0, b"deeper")),
    ("rel_in", (0, b"inside")),
    ("sub/rel_up_in", (0, b"inside")),
    ("dirlink/deep.bin", (0, b"deeper")),
    ("sub/parent/inner.bin", (0, b"inside")),
    ("missing", (errno.ENOENT, b"")),
    (".", (errno.EISDIR, b"")),
    ("sub", (errno.EISDIR, b"")),
    ("fifo", (errno.EINVAL, b"")),
    # escapes
    ("..", (errno.EXDEV, b"")),
    ("../outside.bin", (errno.EXDEV, b"")),
    ("sub/../../outside.bin", (errno.EXDEV, b"")),
    ("sub/parent/../outside.bin", (errno.EXDEV, b"")),
    ("rel_out", (errno.EXDEV, b"")),
    ("abs_out", (errno.EXDEV, b"")),
    ("abs_etc", (errno.EXDEV, b"")),
    ("/etc/hostname", (errno.EXDEV, b"")),
    ("/proc/self/root/etc/hostname", (errno.EXDEV, b"")),
    ("/", (errno.EXDEV, b"")),
    # an absolute path naming a file inside root loads (made root-relative);
    # one that leaves root again through ".." or a symlink does not
    ("ABS:inner.bin", (0, b"inside")),
    ("ABS:sub/deep.bin", (0, b"deeper")),
    ("ABS:sub/../inner.bin", (0, b"inside")),
    ("ABS:../outside.bin", (errno.EXDEV, b"")),
    ("ABS:rel_out", (errno.EXDEV, b"")),
    ("ABS:.", (errno.EISDIR, b"")),
    ("ABSX:", (errno.EXDEV, b"")),  # root's name plus a suffix: a sibling
    # absolute symlinks are refused even when they point inside (RESOLVE_BENEATH)
    ("abs_in", (errno.EXDEV, b"")),
])
def test_confinement(jail: Dict[str, Any], path: str, want: Tuple[int, bytes]) -> None:
    """root= confines every load beneath one directory (openat2 with
    RESOLVE_BENEATH, enforced by the kernel): escapes fail with EXDEV, paths
    inside work, relative paths are relative to root."""
    root = jail["root"]
    if path.startswith("ABS:"):
        path = str(root) + "/" + path[4:]
    elif path.startswith("ABSX:"):
        (root.parent / (root.name + "x")).mkdir()
        (root.parent / (root.name + "x") / "inner.bin").write_bytes(b"sibling")
        path = str(root) + "x/inner.bin"
    good = {"inner.bin": b"inside", "sub/deep.bin": b"deeper"}
    with asyncload.Loader(4, MAX, 1, root=root) as loader:
        w = loader.get_worker_context(0)
        got: Dict[str, List[Tuple[int, bytes]]] = {}
        for p in ("inner.bin", path, "sub/deep.bin"):
            assert w.request(p)
        for _ in range(3):
            with w.wait_get(timeout=5) as e:
                got.setdefault(e.path, []).append((e.error, e.get_data() if e.ok else b""))
        assert got[path].pop() == want
        for p, data in good.items():
            assert got[p] == [(0, data)] or got[p] == []


def test_confinement_ignores_worker_cwd(jail: Dict[str, Any], tmp_path: pathlib.Path) -> None:
    """Relative paths mean root, not the worker's working directory."""
    (tmp_path / "inner.bin").write_bytes(b"cwd copy")
    old = os.getcwd()
    with asyncload.Loader(4, MAX, 1, root=jail["root"]) as loader:
        w = loader.get_worker_context(0)
        try:
            os.chdir(tmp_path)
            assert w.request("inner.bin")
            with w.wait_get(timeout=5) as e:
                assert e.get_data() == b"inside"
                assert e.path == "inner.bin"
        finally:
            os.chdir(old)


def test_confinement_root_given_relative_and_via_symlink(jail: Dict[str, Any],
                                                         tmp_path: pathlib.Path) -> None:
    """root is resolved once, when the Loader is made: a relative root, or a
    symlink to the root directory, confine to the directory they name."""
    os.symlink(jail["root"], tmp_path / "rootlink")
    old = os.getcwd()
    try:
        os.chdir(tmp_path)
        for r in ("root", "rootlink", pathlib.Path("root")):
            with asyncload.Loader(2, MAX, 1, root=r) as loader:
                w = loader.get_worker_context(0)
                for p, want in (("inner.bin", (0, b"inside")),
                                ("../outside.bin", (errno.EXDEV, b""))):
                    assert w.request(p)
                    with w.wait_get(timeout=5) as e:
                        assert (e.error, e.get_data() if e.ok else b"") == want
    finally:
        os.chdir(old)


def test_confinement_escape_by_rename_race(jail: Dict[str, Any]) -> None:
    """A directory inside root swapped for a symlink that points out, over
    and over while it is being loaded through: never a byte of the outside
    file (the kernel checks every step of each open)."""
    root = jail["root"]
    (root / "swap").mkdir()
    (root / "swap" / "f").write_bytes(b"inside-f")
    outdir = jail["outside"].parent / "outdir"
    outdir.mkdir()
    (outdir / "f").write_bytes(b"SECRET")
    stop = threading.Event()

    def flip() -> None:
        while not stop.is_set():
            try:
                os.rename(root / "swap", root / "swap.d")
                os.symlink(str(outdir), root / "swap")
                os.unlink(root / "swap")
                os.rename(root / "swap.d", root / "swap")
            except OSError:
                pass

    t = threading.Thread(target=flip, daemon=True)
    leaked, seen = 0, {0: 0}
    with asyncload.Loader(8, MAX, 1, root=root) as loader:
        w = loader.get_worker_context(0)
        t.start()
        try:
            end = time.monotonic() + 1.5
            while time.monotonic() < end:
                for e in w.load(["swap/f"] * 8):
                    with e:
                        seen[e.error] = seen.get(e.error, 0) + 1
                        if e.ok and e.get_data() != b"inside-f":
                            leaked += 1
        finally:
            stop.set()
            t.join(5)
    assert leaked == 0
    assert set(seen) <= {0, errno.ENOENT, errno.EXDEV}, seen
