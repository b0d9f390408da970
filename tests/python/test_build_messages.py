"""The build explains itself: with liburing (or the compiler) missing or too old,
python/asyncload/_build.py (what pip runs) and meson setup stop with one message
that names the packages to install, not a traceback.

The missing pieces are simulated without touching the system: a compiler
wrapper that searches no include directory, a compiler that does not exist,
a pkg-config that reports an old version, a pkg-config search path with no
liburing.pc (or one that says 2.1)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from typing import Dict, Optional

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.path.join(ROOT, "python", "asyncload", "_build.py")


def _liburing_min() -> str:
    with open(BUILD, encoding="utf-8") as f:
        m = re.search(r'^LIBURING_MIN = "([0-9.]+)"', f.read(), re.M)
    assert m, "LIBURING_MIN not found in _build.py"
    return m.group(1)


def _script(path: str, body: str) -> str:
    with open(path, "w") as f:
        f.write("#!/bin/sh\n" + body + "\n")
    os.chmod(path, 0o755)
    return path


def _probe(env_extra: Dict[str, str], path_prefix: Optional[str] = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, **env_extra)
    if path_prefix:
        env["PATH"] = path_prefix + os.pathsep + env["PATH"]
    return subprocess.run([sys.executable, BUILD, "--check"], capture_output=True, text=True,
                          env=env, timeout=60)


def _assert_explains(r: subprocess.CompletedProcess, what: str) -> None:
    out = r.stdout + r.stderr
    assert r.returncode == 1, out
    assert "Traceback" not in out, out
    assert what in out, out
    assert "liburing-dev" in out and "liburing-devel" in out, out
    assert f"liburing {_liburing_min()} or newer" in out, out
    assert len(out.strip().splitlines()) <= 8, out   # one short message


def test_probe_passes_here() -> None:
    r = _probe({})
    assert r.returncode == 0, r.stdout + r.stderr
    assert "requirements met" in r.stdout


def test_headers_missing(tmp_path) -> None:
    gcc = shutil.which("gcc") or shutil.which("cc")
    assert gcc
    cc = _script(str(tmp_path / "cc"), f'exec {gcc} -nostdinc "$@"')
    _assert_explains(_probe({"CC": cc}), "liburing's headers are missing")


def test_no_compiler(tmp_path) -> None:
    _assert_explains(_probe({"CC": str(tmp_path / "no-such-cc")}), "no C compiler")


def test_liburing_too_old(tmp_path) -> None:
    _script(str(tmp_path / "pkg-config"), 'echo 2.1')
    _assert_explains(_probe({}, path_prefix=str(tmp_path)), "liburing 2.1 is too old")


def test_header_too_old(tmp_path) -> None:
    # a liburing.h without one 2.2 declaration: the real header, included with that
    # function renamed, then the name freed again
    inc = tmp_path / "inc"
    inc.mkdir()
    (inc / "liburing.h").write_text(
        "#define io_uring_register_files_sparse al_renamed_away\n"
        "#include_next <liburing.h>\n"
        "#undef io_uring_register_files_sparse\n")
    gcc = shutil.which("gcc") or shutil.which("cc")
    cc = _script(str(tmp_path / "cc"), f'exec {gcc} -I{inc} "$@"')
    _assert_explains(_probe({"CC": cc}), "header is older than")


def _meson() -> list:
    exe = shutil.which("meson")
    return [exe] if exe else [sys.executable, "-m", "mesonbuild.mesonmain"]


@pytest.mark.deadline(60)
@pytest.mark.parametrize("pc_version", [None, "2.1"])
def test_meson_setup_explains(tmp_path, pc_version: Optional[str]) -> None:
    pcdir = tmp_path / "pc"
    pcdir.mkdir()
    if pc_version:
        real = subprocess.run(["pkg-config", "--variable=pcfiledir", "liburing"],
                              capture_output=True, text=True, check=True).stdout.strip()
        with open(os.path.join(real, "liburing.pc")) as f:
            text = re.sub(r"(?m)^Version:.*$", f"Version: {pc_version}", f.read())
        (pcdir / "liburing.pc").write_text(text)
    # PKG_CONFIG_LIBDIR replaces pkg-config's default search path: liburing
    # stays installed but this meson cannot see it (or sees an old one).
    env = dict(os.environ, PKG_CONFIG_LIBDIR=str(pcdir), PKG_CONFIG_PATH="",
               CMAKE_PREFIX_PATH=str(pcdir))
    r = subprocess.run([*_meson(), "setup", str(tmp_path / "b"), ROOT, "-Dtests=false",
                        "-Dtools=false"], capture_output=True, text=True, env=env,
                       timeout=55)
    out = r.stdout + r.stderr
    assert r.returncode != 0, out
    assert "Traceback" not in out
    assert f"liburing {_liburing_min()} or newer" in out, out
    assert "liburing-dev" in out and "liburing-devel" in out, out


def test_one_minimum_version() -> None:
    want = _liburing_min()
    with open(os.path.join(ROOT, "meson.build")) as f:
        assert f"liburing_min = '{want}'" in f.read()
    for doc in ("README.md", os.path.join("docs", "c-library.md")):
        with open(os.path.join(ROOT, doc)) as f:
            text = f.read()
        found = set(re.findall(r"liburing[^.\n]{0,40}?(\d+\.\d+) or newer", text))
        assert found == {want}, (doc, found)
