"""cffi build script for asyncload._asyncload, the compiled binding.

Used by setup.py (``cffi_modules``) during ``pip install``; it can also be run
directly (``python python/asyncload/_build.py``) to build the module in place.
The binding is in cffi's API mode: the C library's sources are compiled into
the extension itself, so an installed wheel needs no separate libasyncload.so
and the compiler checks the declarations in _asyncload_cdef.h against the
real header.

Before anything is compiled, check_build_requirements() makes sure the C
compiler, Python's headers and liburing (headers, library, version) are
there, and otherwise stops with one message that says what to install: a
compiler traceback deep inside pip tells a new user nothing.
"""

from __future__ import annotations

import glob
import os
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from typing import List, Optional, Sequence, Tuple

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


# The oldest liburing whose header declares everything libasyncload/src uses:
# io_uring_submit_and_wait_timeout, io_uring_register_files_sparse,
# io_uring_prep_close_direct and the *_data64 helpers all arrived in 2.2
# (io_uring_register_iowq_max_workers in 2.1, io_uring_prep_openat2 in 2.0).
# meson.build, README.md and docs/c-library.md say the same number; a test
# (tests/python/test_build_messages.py) keeps them in step.
LIBURING_MIN = "2.2"

_INSTALL_HINT = (
    "  Debian/Ubuntu:  sudo apt-get install liburing-dev pkg-config gcc python3-dev\n"
    "  Fedora/RHEL:    sudo dnf install liburing-devel pkgconf-pkg-config gcc python3-devel\n"
    f"liburing {LIBURING_MIN} or newer is needed (Debian 12 and Ubuntu 24.04 ship one; on older\n"
    "releases build it from https://github.com/axboe/liburing and set PKG_CONFIG_PATH)."
)

# A declaration from each liburing release we depend on: compiling this
# proves the header is there and new enough; linking proves the library is.
_PROBE_SOURCE = """\
#include <liburing.h>
int main(void)
{
	struct io_uring ring;
	struct io_uring_sqe sqe;
	io_uring_prep_close_direct(&sqe, 0);               /* 2.2 */
	io_uring_sqe_set_data64(&sqe, 1);                  /* 2.2 */
	if (io_uring_queue_init(1, &ring, 0) == 0) {
		(void)io_uring_register_files_sparse(&ring, 1);  /* 2.2 */
		io_uring_queue_exit(&ring);
	}
	return 0;
}
"""


class BuildRequirementError(SystemExit):
    """The build cannot start; the message says what to install.

    A SystemExit so that Python (and pip, which shows the build's output)
    prints the message alone, with no traceback.
    """

    def __init__(self, problem: str) -> None:
        super().__init__(f"\nasyncload cannot be built: {problem}\nInstall, then run pip again:\n"
                         + _INSTALL_HINT + "\n")


def _version_tuple(text: str) -> Tuple[int, ...]:
    parts: List[int] = []
    for piece in text.strip().split("."):
        digits = "".join(ch for ch in piece if ch.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def _compiler() -> List[str]:
    """The compiler setuptools will use: $CC, else the one Python was built with."""
    cc = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
    return shlex.split(cc)


def _pkgconfig_version() -> Optional[str]:
    """liburing's version per pkg-config; None when pkg-config or the .pc file is missing."""
    try:
        r = subprocess.run([os.environ.get("PKG_CONFIG", "pkg-config"), "--modversion",
                            "liburing"], capture_output=True, text=True, timeout=30)
    except OSError:
        return None
    return r.stdout.strip() if r.returncode == 0 and r.stdout.strip() else None


def check_build_requirements() -> None:
    """Raise BuildRequirementError unless a compiler, Python.h and liburing >= LIBURING_MIN exist."""
    cc = _compiler()
    if not cc or not shutil.which(cc[0]):
        raise BuildRequirementError(f"no C compiler ({' '.join(cc) or 'cc'} not found).")
    pyinc = sysconfig.get_paths().get("include", "")
    if not os.path.exists(os.path.join(pyinc, "Python.h")):
        raise BuildRequirementError(f"Python's headers are missing (no Python.h in {pyinc}).")
    version = _pkgconfig_version()
    if version is not None and _version_tuple(version) < _version_tuple(LIBURING_MIN):
        raise BuildRequirementError(f"liburing {version} is too old; {LIBURING_MIN} or newer "
                                    "is needed.")
    libs, libdirs, incdirs = _uring_flags()
    inc = [f"-I{d}" for d in incdirs]
    with tempfile.TemporaryDirectory(prefix="asyncload-probe-") as tmp:
        def compile_(source: str, *args: str, libs_after: Sequence[str] = ()) -> Tuple[bool, str]:
            src = os.path.join(tmp, "probe.c")
            with open(src, "w", encoding="utf-8") as f:
                f.write(source)
            try:
                r = subprocess.run([*cc, *args, *inc, src, *libs_after], capture_output=True, text=True,
                                   timeout=120, cwd=tmp)
            except OSError as exc:
                raise BuildRequirementError(f"the C compiler {cc[0]} cannot run ({exc}).") \
                    from None
            lines = [ln for ln in r.stderr.splitlines() if "error" in ln] or \
                r.stderr.strip().splitlines() or ["?"]
            # drop the temporary file's name: "probe.c:1:10: fatal error: ..."
            first = lines[0].strip().replace(src + ":", "probe.c:")
            return r.returncode == 0, first[:200]

        # One question per step, so the message names the missing piece.
        ok, why = compile_("#include <liburing.h>\n", "-fsyntax-only")
        if not ok:
            raise BuildRequirementError(f"liburing's headers are missing ({why}).")
        ok, why = compile_(_PROBE_SOURCE, "-fsyntax-only",
                           "-Werror=implicit-function-declaration")
        if not ok:
            raise BuildRequirementError(f"liburing's header is older than {LIBURING_MIN} "
                                        f"({why}).")
        ok, why = compile_(_PROBE_SOURCE, "-o", os.path.join(tmp, "probe"),
                           libs_after=[*(f"-L{d}" for d in libdirs),
                                       *(f"-l{name}" for name in libs)])
        if not ok:
            raise BuildRequirementError(f"liburing's library cannot be linked ({why}).")


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


# Compiled into the extension only. Per-entry C calls cost more in Python
# than the work they do (a cached file costs the worker a few microseconds of
# Python in all): fill() reads a whole batch's fields in one call.
_PREAMBLE = r"""
#include "asyncload.h"
#include "internal.h"

#define AL_PY_FIELDS 5

static void al_py_entry_fields(asyncload_entry **es, unsigned n, uint64_t *out)
{
    for (unsigned i = 0; i < n; i++, out += AL_PY_FIELDS) {
        const struct al_entry_shm *e = (const struct al_entry_shm *)es[i];
        out[0] = e->size;
        out[1] = e->offset;
        out[2] = e->tag;
        out[3] = (uint64_t)-(int64_t)e->error;
        out[4] = e->inline_answer;
    }
}
"""


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
        _PREAMBLE,
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


check_build_requirements()
ffibuilder = _make_ffi()

if __name__ == "__main__":
    if sys.argv[1:] == ["--check"]:
        # the probe above already ran: reaching here means it passed
        print(f"build requirements met (liburing >= {LIBURING_MIN}, compiler, Python.h)")
        sys.exit(0)
    # Build next to this file so `import asyncload` from python/ finds it
    # (what `pip install -e .` does, without pip).
    tmp = os.path.join(_ROOT, "build-py", "cffi")
    built = _make_ffi(absolute=True).compile(tmpdir=tmp, verbose=True)
    shutil.copy(built, _HERE)
    print(f"copied {os.path.basename(built)} to {_HERE}")
