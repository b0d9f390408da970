"""cffi build script for asyncload._asyncload, the compiled binding.

Used by setup.py (``cffi_modules``) during ``pip install``; it can also be run
directly (``python python/asyncload/_build.py``) to build the module in place.
The binding is in cffi's API mode: the C library's sources are compiled into
the extension itself, so an installed wheel needs no separate libasyncload.so
and the compiler checks the declarations in _asyncload_cdef.h against the
real header.
"""

from __future__ import annotations

import glob
import os
import shlex
import subprocess

from cffi import FFI

_HERE = os.path.dirname(os.path.abspath(__file__))
_ROOT = os.path.dirname(os.path.dirname(_HERE))


def _rel(path: str) -> str:
    """Paths relative to the current directory where possible.

    setuptools builds from the project root and complains about (and in some
    versions mishandles) absolute source paths, so prefer relative ones.
    """
    rel = os.path.relpath(path)
    return path if rel.startswith("..") else rel


def _uring_flags() -> tuple[list[str], list[str], list[str]]:
    """liburing's libraries, library dirs and include dirs from pkg-config.

    Falls back to plain -luring: Debian/Ubuntu's liburing-dev ships a .pc
    file, but a hand-built liburing may not.
    """
    try:
        out = subprocess.run(
            ["pkg-config", "--libs", "--cflags", "liburing"],
            check=True, capture_output=True, text=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return ["uring"], [], []
    libs: list[str] = []
    libdirs: list[str] = []
    incdirs: list[str] = []
    for tok in shlex.split(out):
        if tok.startswith("-l"):
            libs.append(tok[2:])
        elif tok.startswith("-L"):
            libdirs.append(tok[2:])
        elif tok.startswith("-I"):
            incdirs.append(tok[2:])
    return libs or ["uring"], libdirs, incdirs


def _make_ffi(absolute: bool = False) -> FFI:
    ffi = FFI()
    with open(os.path.join(_HERE, "_asyncload_cdef.h"), encoding="utf-8") as f:
        ffi.cdef(f.read())
    sources = sorted(glob.glob(os.path.join(_ROOT, "libasyncload", "src", "*.c")))
    if not sources:
        raise RuntimeError(
            f"no C sources in {os.path.join(_ROOT, 'libasyncload', 'src')}; "
            "build from a full checkout (or an sdist that includes them)"
        )
    libs, libdirs, incdirs = _uring_flags()
    # ffi.compile() (the __main__ path) builds from inside its tmpdir, so it
    # needs absolute paths; setuptools wants them relative to the project.
    rel = (lambda p: p) if absolute else _rel
    ffi.set_source(
        "asyncload._asyncload",
        '#include "asyncload.h"',
        sources=[rel(s) for s in sources],
        include_dirs=[
            rel(os.path.join(_ROOT, "libasyncload", "include")),
            rel(os.path.join(_ROOT, "libasyncload", "src")),
            *incdirs,
        ],
        libraries=libs,
        library_dirs=libdirs,
        extra_compile_args=["-std=gnu11", "-O2", "-Wall", "-Wextra"],
    )
    return ffi


ffibuilder = _make_ffi()

if __name__ == "__main__":
    # Build next to this file so `import asyncload` from python/ finds it
    # (what `pip install -e .` does, without pip).
    import shutil

    tmp = os.path.join(_ROOT, "build-py", "cffi")
    built = _make_ffi(absolute=True).compile(tmpdir=tmp, verbose=True)
    shutil.copy(built, _HERE)
    print(f"copied {os.path.basename(built)} to {_HERE}")
