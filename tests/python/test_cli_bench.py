"""`asyncload info` and `asyncload bench`: the fields a bug report needs, the io_uring probe's
reasons (with io_uring really refused by a seccomp filter, as in Docker 25+), and a short
bench run on a temporary folder whose JSON, table and PNG are checked."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import tempfile
from typing import Dict, List

import pytest

import asyncload
from asyncload import _sysinfo
from al_testutil import make_files

HERE = os.path.dirname(os.path.abspath(__file__))
PYDIR = os.path.dirname(os.path.dirname(asyncload.__file__))


def _env(extra_path: str = "") -> Dict[str, str]:
    parts = [p for p in (extra_path, PYDIR, HERE, os.environ.get("PYTHONPATH", "")) if p]
    return dict(os.environ, PYTHONPATH=os.pathsep.join(parts))


def _cli(args: List[str], extra_path: str = "", timeout: int = 60
         ) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "asyncload", *args], capture_output=True,
                          text=True, env=_env(extra_path), timeout=timeout)


def test_info_prints_the_fields() -> None:
    r = _cli(["info"])
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert out.startswith(f"asyncload {asyncload.__version__} ")
    for field in ("engine (auto):", "engines built:", "io_uring:", "kernel.io_uring_disabled=",
                  "kernel:", "futex wait in the ring", "RESOLVE_CACHED", "RLIMIT_NOFILE:",
                  "RLIMIT_MEMLOCK:", "liburing:", "cpus:"):
        assert field in out, (field, out)
    assert "Traceback" not in r.stderr


def test_info_json_matches_this_process() -> None:
    r = _cli(["info", "--json"])
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["asyncload"] == asyncload.__version__
    assert info["kernel"] == os.uname().release
    assert info["engines"] == _sysinfo.engines()
    # as this process finds it (CI runs once with io_uring and once with the sysctl
    # forbidding it); the refused cases are tested below
    here = _sysinfo.probe_io_uring()
    assert info["io_uring"]["available"] is here["available"], info["io_uring"]
    assert info["auto_engine"] == ("io_uring" if here["available"] else "threads")
    import resource
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    assert info["rlimit_nofile"].startswith(str(soft) if soft != resource.RLIM_INFINITY
                                            else "unlimited")
    assert info["liburing"][0].isdigit(), info["liburing"]


_DENIED_CHILD = """
import json, sys
from al_testutil import deny_io_uring
deny_io_uring()
from asyncload import _sysinfo
info = _sysinfo.collect()
print(json.dumps(info))
import asyncload
loader = asyncload.Loader(4, 1 << 20, 1)  # sys.executable is larger than a page
try:
    loader.spawn_loader()
    w = loader.get_worker_context(0)
    n = sum(1 for e in w.load([sys.executable]) if not e.error and e.release() is None)
    print("LOADER_OK" if n == 1 else "LOADER_LOST")
except OSError as exc:
    print("LOADER_FAILS", exc.errno)
finally:
    loader.close()
"""


def test_info_when_a_seccomp_filter_refuses_io_uring() -> None:
    # in CI's pass with kernel.io_uring_disabled=2 the sysctl refuses first, and
    # info must name it rather than the filter
    sysctl_first = not _sysinfo.probe_io_uring()["available"]
    r = subprocess.run([sys.executable, "-c", _DENIED_CHILD], capture_output=True, text=True,
                       env=_env(), timeout=60)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    info = json.loads(lines[0])
    u = info["io_uring"]
    assert u["available"] is False and u["errno"] == "EPERM", u
    if sysctl_first:
        assert "kernel.io_uring_disabled" in u["reason"], u
    else:
        assert "seccomp" in u["reason"] and "this process has one" in u["reason"], u
    if "threads" in info["engines"]:
        # the thread engine takes over and the loader works
        assert info["auto_engine"] == "threads"
        assert lines[1] == "LOADER_OK", lines
    else:
        assert info["auto_engine"] is None
        assert "no thread engine" in info["auto_reason"]
        assert lines[1] == f"LOADER_FAILS {errno.EPERM}", lines


@pytest.mark.parametrize("err,disabled,words", [
    (errno.EPERM, 2, "kernel.io_uring_disabled=2"),
    (errno.EPERM, 1, "kernel.io_uring_group"),
    (errno.EPERM, 0, "Docker 25+"),
    (errno.ENOSYS, None, "not implemented"),
    (errno.ENOMEM, 0, "Cannot allocate memory"),
])
def test_setup_failure_reasons(err: int, disabled: int, words: str) -> None:
    assert words in _sysinfo.setup_failure_reason(err, disabled, "docker", 2)


def test_auto_engine_rule() -> None:
    up = dict(available=True, reason="a ring can be set up")
    down = dict(available=False, reason="blocked")
    assert _sysinfo.auto_engine(up, ["io_uring", "threads"])[0] == "io_uring"
    assert _sysinfo.auto_engine(down, ["io_uring", "threads"]) == (
        "threads", "io_uring is unavailable: blocked")
    assert _sysinfo.auto_engine(down, ["io_uring"])[0] is None


def test_mount_of_matches_findmnt(tmp_path) -> None:
    m = _sysinfo.mount_of(str(tmp_path))
    want = subprocess.run(["findmnt", "-no", "FSTYPE,TARGET", "-T", str(tmp_path)],
                          capture_output=True, text=True, check=True).stdout.split()
    assert [m["fstype"], m["mount"]] == want


@pytest.fixture
def no_progress_libs(tmp_path) -> str:
    """A path entry whose tqdm and rich fail to import: the bench must fall back to plain
    progress lines even where they are installed."""
    d = tmp_path / "hide"
    for name in ("tqdm", "rich"):
        (d / name).mkdir(parents=True)
        (d / name / "__init__.py").write_text("raise ImportError('hidden by the test')\n")
    return str(d)


@pytest.mark.deadline(60)
def test_bench_small_dir(tmp_path, no_progress_libs: str) -> None:
    files = make_files(str(tmp_path / "data"), 50, max_size=64_000)
    total = sum(len(b) for b in files.values())
    out_json, out_png = tmp_path / "out.json", tmp_path / "out.png"
    r = _cli(["bench", str(tmp_path / "data"), "--files", "50", "--threads", "2,4",
              "--json", str(out_json), "--png", str(out_png)], extra_path=no_progress_libs)
    assert r.returncode == 0, r.stdout + r.stderr
    rep = json.loads(out_json.read_text())
    uring = _sysinfo.probe_io_uring()["available"]
    engines = _sysinfo.runnable_engines()
    want = {"python-seq", "threads-2", "threads-4", "procs-2"} | {
        f"asyncload-{e}" for e in engines}
    assert rep["procs"] == 2 or "procs-2" not in rep["rows"]
    want = {n.replace("procs-2", f"procs-{rep['procs']}") for n in want}
    assert set(rep["rows"]) == want
    for name, row in rep["rows"].items():
        assert "error" not in row, (name, row)
        assert row["files"] == 50 and row["errors"] == 0 and row["bytes"] == total, (name, row)
        assert 0 < row["wall"] < 30
        assert row["files_s"] == pytest.approx(50 / row["wall"])
        assert row["mb_s"] == pytest.approx(total / row["wall"] / 1e6)
        assert 0 < row["cpu_us_per_file"] < 1e6
    assert rep["ref"] in {f"asyncload-{e}" for e in engines}
    assert rep["best_threads"] in ("threads-2", "threads-4")
    assert rep["mount"]["fstype"] == _sysinfo.mount_of(str(tmp_path))["fstype"]
    assert rep["recommend"]["max_file_size"] >= max(len(b) for b in files.values())
    # the table, without tqdm or rich
    assert "contender" in r.stdout and "x asyncload" in r.stdout
    assert f"{rep['ref']}" in r.stdout and "(best pool)" in r.stdout
    assert "filesystem: " + rep["mount"]["fstype"] in r.stdout
    assert ("io_uring available" if uring else "io_uring unavailable") in r.stdout
    assert "recommended: Loader(" in r.stdout
    assert "bench: [1/" in r.stderr      # plain progress lines
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.deadline(60)
def test_bench_cold_says_how(tmp_path) -> None:
    make_files(str(tmp_path / "data"), 20, max_size=16_000)
    out_json = tmp_path / "out.json"
    r = _cli(["bench", str(tmp_path / "data"), "--files", "20", "--threads", "2", "--cold",
              "--json", str(out_json)])
    assert r.returncode == 0, r.stdout + r.stderr
    rep = json.loads(out_json.read_text())
    assert rep["mode"] == "cold"
    root = os.access("/proc/sys/vm/drop_caches", os.W_OK)
    assert rep["cache_method"] == ("fadvise+drop_caches" if root else "fadvise")
    assert "posix_fadvise(DONTNEED)" in r.stdout
    assert ("drop_caches=2" in r.stdout) == root


def test_page_cache_drop_evicts() -> None:
    from asyncload._contenders import PageCache
    # a real disk (tmpfs pages cannot be evicted); fincore comes with util-linux-extra
    d = tempfile.mkdtemp(dir="/var/tmp", prefix="al-evict-")
    files = make_files(d, 5, max_size=200_000)
    cache = PageCache(list(files), method="fadvise")
    cache.fill()

    def resident() -> int:
        out = subprocess.run(["fincore", "-nbo", "RES", *files], capture_output=True,
                             text=True, check=True).stdout
        return sum(int(x) for x in out.split())
    try:
        assert resident() > 0
        cache.drop()
        assert resident() == 0
    finally:
        shutil.rmtree(d)
