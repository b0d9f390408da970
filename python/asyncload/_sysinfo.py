"""`asyncload info` and the system probes behind it (also used by `asyncload bench`).

What a bug report needs in a few lines: the version, whether io_uring can be
used here and, if not, why in words (sysctl, seccomp, old kernel), the engine
`engine="auto"` would pick, the kernel features the loader uses, the limits
that bound it, the liburing the extension runs with and the CPUs.

The io_uring probe calls io_uring_setup(2) itself through ctypes rather than
creating a Loader: it must answer in a container that forbids io_uring, and a
failure there has to become a reason, not an exception.
"""

from __future__ import annotations

import argparse
import ctypes
import errno
import json
import os
import platform
import resource
import sys
from typing import Any, Dict, List, Optional, Tuple

# Syscall numbers of the calls added after the 2019 unification have the same
# value on every architecture Linux added them to (x86-64, arm64, riscv, ...).
_NR_IO_URING_SETUP = 425
_NR_IO_URING_REGISTER = 427
_NR_OPENAT2 = 437
_IORING_REGISTER_PROBE = 8
_IO_URING_OP_SUPPORTED = 1
_IORING_OP_FUTEX_WAIT = 51
_RESOLVE_CACHED = 0x20
_AT_FDCWD = -100
# The loader registers a sparse table of direct descriptors (5.19).
_MIN_KERNEL = (5, 19)


class _IoUringParams(ctypes.Structure):
    # struct io_uring_params: 10 u32 then two 40-byte offset blocks (120 bytes)
    _fields_ = [("sq_entries", ctypes.c_uint32), ("cq_entries", ctypes.c_uint32),
                ("flags", ctypes.c_uint32), ("sq_thread_cpu", ctypes.c_uint32),
                ("sq_thread_idle", ctypes.c_uint32), ("features", ctypes.c_uint32),
                ("wq_fd", ctypes.c_uint32), ("resv", ctypes.c_uint32 * 3),
                ("offsets", ctypes.c_uint8 * 80)]


class _ProbeOp(ctypes.Structure):
    _fields_ = [("op", ctypes.c_uint8), ("resv", ctypes.c_uint8),
                ("flags", ctypes.c_uint16), ("resv2", ctypes.c_uint32)]


class _Probe(ctypes.Structure):
    _fields_ = [("last_op", ctypes.c_uint8), ("ops_len", ctypes.c_uint8),
                ("resv", ctypes.c_uint16), ("resv2", ctypes.c_uint32 * 3),
                ("ops", _ProbeOp * 256)]


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64),
                ("resolve", ctypes.c_uint64)]


def _libc() -> Any:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    return libc


def kernel_version() -> Tuple[int, ...]:
    out: List[int] = []
    for part in platform.release().split("-")[0].split(".")[:3]:
        digits = "".join(ch for ch in part if ch.isdigit())
        out.append(int(digits) if digits else 0)
    return tuple(out)


def _read(path: str) -> Optional[str]:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _seccomp_mode() -> Optional[int]:
    for line in (_read("/proc/self/status") or "").splitlines():
        if line.startswith("Seccomp:"):
            return int(line.split()[1])
    return None


def container_hint() -> Optional[str]:
    """A guess at the container runtime, for the reason text; None on a plain host."""
    if os.path.exists("/.dockerenv"):
        return "docker"
    if os.path.exists("/run/.containerenv"):
        return "podman"
    cg = _read("/proc/1/cgroup") or ""
    for name in ("docker", "containerd", "kubepods", "lxc"):
        if name in cg:
            return name
    return None


def setup_failure_reason(err: int, disabled: Optional[int], where: Optional[str],
                         seccomp: Optional[int]) -> str:
    """Why io_uring_setup failed with err, in words a user can act on."""
    if err == errno.ENOSYS:
        return ("io_uring_setup is not implemented here (kernel without CONFIG_IO_URING, "
                "gVisor, or a seccomp profile that answers ENOSYS)")
    if err == errno.EPERM and disabled == 2:
        return "the sysctl kernel.io_uring_disabled=2 forbids io_uring on this host"
    if err == errno.EPERM and disabled == 1:
        return ("the sysctl kernel.io_uring_disabled=1 allows io_uring only to root and the "
                "group in kernel.io_uring_group")
    if err == errno.EPERM:
        return ("io_uring_setup was refused (EPERM) by a seccomp filter"
                + (" (this process has one)" if seccomp == 2 else "")
                + (f"; in a {where} container: Docker 25+ and containerd 2.0 block io_uring "
                   "in their default seccomp profiles" if where else "")
                + ", or by an LSM policy")
    return f"io_uring_setup failed: {os.strerror(err)}"


def probe_io_uring() -> Dict[str, Any]:
    """Can this process set up an io_uring? Returns available, reason (words), errno,
    the sysctl kernel.io_uring_disabled (None where the kernel has none) and, when a
    ring could be made, whether the kernel has IORING_OP_FUTEX_WAIT."""
    disabled_txt = _read("/proc/sys/kernel/io_uring_disabled")
    disabled = int(disabled_txt) if disabled_txt and disabled_txt.isdigit() else None
    out: Dict[str, Any] = dict(available=False, errno=None, io_uring_disabled=disabled,
                               futex_op=None, reason="")
    kv = kernel_version()
    libc = _libc()
    params = _IoUringParams()
    fd = libc.syscall(ctypes.c_long(_NR_IO_URING_SETUP), ctypes.c_uint(1),
                      ctypes.byref(params))
    if fd < 0:
        err = ctypes.get_errno()
        out["errno"] = errno.errorcode.get(err, str(err))
        out["reason"] = setup_failure_reason(err, disabled, container_hint(), _seccomp_mode())
        return out
    try:
        probe = _Probe()
        r = libc.syscall(ctypes.c_long(_NR_IO_URING_REGISTER), ctypes.c_int(fd),
                         ctypes.c_uint(_IORING_REGISTER_PROBE), ctypes.byref(probe),
                         ctypes.c_uint(256))
        if r == 0:
            op = probe.ops[_IORING_OP_FUTEX_WAIT]
            out["futex_op"] = bool(probe.last_op >= _IORING_OP_FUTEX_WAIT
                                   and op.flags & _IO_URING_OP_SUPPORTED)
    finally:
        os.close(fd)
    if kv < _MIN_KERNEL:
        out["reason"] = (f"kernel {platform.release()} is older than "
                         f"{'.'.join(map(str, _MIN_KERNEL))}: its io_uring lacks the sparse "
                         "direct-descriptor table the loader needs")
        return out
    out["available"] = True
    out["reason"] = "a ring can be set up"
    return out


def probe_resolve_cached() -> str:
    """Whether openat2(RESOLVE_CACHED) works (5.12+): the loader's cached-open fast path."""
    libc = _libc()
    how = _OpenHow(flags=os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0),
                   mode=0, resolve=_RESOLVE_CACHED)
    for _ in range(2):     # the first lookup may fill the dentry cache
        fd = libc.syscall(ctypes.c_long(_NR_OPENAT2), ctypes.c_int(_AT_FDCWD), b"/",
                          ctypes.byref(how), ctypes.c_size_t(ctypes.sizeof(how)))
        if fd >= 0:
            os.close(fd)
            return "yes"
        err = ctypes.get_errno()
        if err != errno.EAGAIN:
            return f"no ({errno.errorcode.get(err, err)})"
    return "yes (lookups not cached yet)"


def engines(lib: Any = None) -> List[str]:
    """The engines this build has: the thread engine exists once the C library exports
    asyncload_loader_engine()."""
    if lib is None:
        from ._lowlevel import lib
    return ["io_uring", "threads"] if hasattr(lib, "asyncload_loader_engine") else ["io_uring"]


def runnable_engines(uring: Optional[Dict[str, Any]] = None) -> List[str]:
    """The engines this build has that can run in this process (io_uring only where
    a ring can be set up)."""
    available = (uring or probe_io_uring())["available"]
    return [e for e in engines() if e != "io_uring" or available]


def auto_engine(uring: Dict[str, Any], have: List[str]) -> Tuple[Optional[str], str]:
    """The engine engine="auto" picks, and why, in words."""
    if uring["available"]:
        return "io_uring", "io_uring is available (" + uring["reason"] + ")"
    if "threads" in have:
        return "threads", "io_uring is unavailable: " + uring["reason"]
    return None, ("io_uring is unavailable and this build has no thread engine, so "
                  "Loader() fails here: " + uring["reason"])


def liburing_runtime() -> str:
    """The liburing shared library the extension is running with, from /proc/self/maps."""
    try:
        from . import _asyncload  # noqa: F401  (maps the library in)
    except ImportError as exc:
        return f"? (extension not importable: {exc})"
    for line in (_read("/proc/self/maps") or "").splitlines():
        path = line.split()[-1] if len(line.split()) >= 6 else ""
        if "/liburing" in path:
            real = os.path.realpath(path)
            name = os.path.basename(real)
            ver = name.split(".so.", 1)[1] if ".so." in name else "?"
            return f"{ver} ({real})"
    return "? (not loaded as a shared library)"


def _limit(res: int) -> str:
    soft, hard = resource.getrlimit(res)
    fmt = lambda v: "unlimited" if v == resource.RLIM_INFINITY else str(v)
    return f"{fmt(soft)} (hard {fmt(hard)})"


def mount_of(path: str) -> Dict[str, str]:
    """Filesystem type, source and mount point of path, from /proc/self/mountinfo:
    the entry on path's device whose mount point is the longest prefix of path."""
    real = os.path.realpath(path)
    st = os.stat(real)
    dev = f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}"
    best: Dict[str, str] = {}
    for line in (_read("/proc/self/mountinfo") or "").splitlines():
        left, _, right = line.partition(" - ")
        f, r = left.split(), right.split()
        if len(f) < 6 or len(r) < 2:
            continue
        mnt = f[4].replace("\\040", " ")
        inside = real == mnt or real.startswith(mnt.rstrip("/") + "/")
        if f[2] == dev and inside and len(mnt) >= len(best.get("mount", "")):
            best = dict(fstype=r[0], source=r[1], mount=mnt, options=f[5])
    if not best:
        best = dict(fstype="?", source="?", mount="?", options="")
    return best


def collect() -> Dict[str, Any]:
    """Everything `asyncload info` prints, as a dict (also stored in bench JSON)."""
    from . import __version__
    uring = probe_io_uring()
    have = engines()
    engine, why = auto_engine(uring, have)
    kv = kernel_version()
    try:
        affinity = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = os.cpu_count() or 0
    mem_max = _read("/sys/fs/cgroup/memory.max")
    return dict(
        asyncload=__version__,
        package=os.path.dirname(os.path.abspath(__file__)),
        python=f"{platform.python_version()} ({sys.executable})",
        engines=have,
        auto_engine=engine,
        auto_reason=why,
        io_uring=uring,
        kernel=platform.release(),
        kernel_ok=kv >= _MIN_KERNEL,
        futex_op=uring["futex_op"],
        resolve_cached=probe_resolve_cached(),
        rlimit_nofile=_limit(resource.RLIMIT_NOFILE),
        rlimit_memlock=_limit(resource.RLIMIT_MEMLOCK),
        cgroup_memory_max=mem_max,
        liburing=liburing_runtime(),
        cpus=f"{os.cpu_count()} online, {affinity} usable by this process",
        container=container_hint(),
        machine=platform.machine(),
    )


def format_info(info: Dict[str, Any]) -> str:
    u = info["io_uring"]
    fx = info["futex_op"]
    lines = [
        f"asyncload {info['asyncload']} ({info['package']})",
        f"python:         {info['python']}",
        f"engine (auto):  {info['auto_engine'] or 'none'}: {info['auto_reason']}",
        f"engines built:  {', '.join(info['engines'])}",
        f"io_uring:       {'available' if u['available'] else 'unavailable'}"
        + (f" (errno {u['errno']})" if u["errno"] else "")
        + f"; sysctl kernel.io_uring_disabled="
        + ("n/a" if u["io_uring_disabled"] is None else str(u["io_uring_disabled"])),
        f"kernel:         {info['kernel']} ({info['machine']})"
        + ("" if info["kernel_ok"] else f", older than {'.'.join(map(str, _MIN_KERNEL))}"),
        "features:       futex wait in the ring (6.7+): "
        + ("?" if fx is None else "yes" if fx else "no (the loader sleeps with futex())")
        + f"; openat2 RESOLVE_CACHED (5.12+): {info['resolve_cached']}",
        f"RLIMIT_NOFILE:  {info['rlimit_nofile']}",
        f"RLIMIT_MEMLOCK: {info['rlimit_memlock']}",
        f"liburing:       {info['liburing']}",
        f"cpus:           {info['cpus']}",
    ]
    if info["cgroup_memory_max"]:
        lines.append(f"cgroup memory:  {info['cgroup_memory_max']}")
    if info["container"]:
        lines.append(f"container:      {info['container']}")
    return "\n".join(lines)


def add_parser(sub: Any) -> None:
    p = sub.add_parser("info", help="what a bug report needs: version, engine, kernel, limits")
    p.add_argument("--json", action="store_true", help="print the fields as JSON")
    p.set_defaults(run=run_info)


def run_info(args: argparse.Namespace) -> int:
    info = collect()
    print(json.dumps(info, indent=1) if args.json else format_info(info))
    return 0
