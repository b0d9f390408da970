"""Helpers shared by the asyncload tests (and by their child processes,
which import this module by name, so it must not depend on pytest)."""

from __future__ import annotations

import os
import random
from typing import Any, Dict, List, Tuple

import asyncload


def make_files(root: str, n: int, seed: int = 0, max_size: int = 200_000) -> Dict[str, bytes]:
    """n files with random content and varied sizes under root; path -> bytes.

    Sizes include the edge cases 0, 1 and exactly one page.
    """
    os.makedirs(root, exist_ok=True)
    rng = random.Random(seed)
    out: Dict[str, bytes] = {}
    for i in range(n):
        size = (0, 1, 4096)[i] if i < 3 else rng.randrange(max_size)
        data = rng.randbytes(size)
        path = os.path.join(root, f"f{i:04d}.bin")
        with open(path, "wb") as f:
            f.write(data)
        out[path] = data
    return out


def load_and_check(worker: "asyncload.Worker", expected: Dict[str, bytes]) -> List[str]:
    """Load every path through worker.load(); return a list of problems.

    Entries are matched to their paths by tag (load() tags each with its
    item's index); the path an entry reports must agree.
    """
    problems: List[str] = []
    paths = sorted(expected)
    seen = set()
    for entry in worker.load(paths):
        with entry:
            path = paths[entry.tag]
            if entry.path != path:
                problems.append(f"{path}: answered as {entry.path}")
            if entry.error:
                problems.append(f"{path}: errno {entry.error}")
                continue
            if entry.tag in seen:
                problems.append(f"{path}: completed twice")
            seen.add(entry.tag)
            if entry.get_data() != expected[path]:
                problems.append(f"{path}: content differs")
            if bytes(entry.data) != expected[path]:
                problems.append(f"{path}: view differs")
    missing = [paths[i] for i in set(range(len(paths))) - seen]
    if missing:
        problems.append(f"never completed: {sorted(missing)[:5]}")
    return problems


def children_of(pid: int) -> List[Tuple[int, str]]:
    """(pid, state) of every process, zombies included, whose parent is pid."""
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        # the command name may hold spaces: fields after the last ')'
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[1]) == pid:
            out.append((int(name), fields[0]))
    return out


def child_count(pid: int) -> int:
    """Processes (zombies included) whose parent is pid."""
    return len(children_of(pid))


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def memfd_mappings() -> int:
    with open("/proc/self/maps") as f:
        return sum(1 for line in f if "memfd:" in line)


def deny_io_uring(err: int = 1) -> None:
    """Make io_uring_setup/enter/register fail with errno err (EPERM) in this process and
    its children, as Docker 25+'s and containerd 2.0's default seccomp profiles do.

    Irreversible: call it only in a child process made for the purpose. Syscall numbers
    425-427 are the same on every architecture that has them.
    """
    import ctypes

    class SockFilter(ctypes.Structure):
        _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8),
                    ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)]

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_uint16), ("filter", ctypes.POINTER(SockFilter))]

    ld_nr, jge, jgt, ret = 0x20, 0x35, 0x25, 0x06
    prog = (SockFilter * 5)(
        SockFilter(ld_nr, 0, 0, 0),                   # A = seccomp_data.nr
        SockFilter(jge, 0, 2, 425),                   # nr < 425: allow
        SockFilter(jgt, 1, 0, 427),                   # nr > 427: allow
        SockFilter(ret, 0, 0, 0x00050000 | err),      # SECCOMP_RET_ERRNO | err
        SockFilter(ret, 0, 0, 0x7FFF0000),            # SECCOMP_RET_ALLOW
    )
    fprog = SockFprog(len(prog), prog)
    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_no_new_privs, pr_set_seccomp, seccomp_mode_filter = 38, 22, 2
    if libc.prctl(pr_set_no_new_privs, 1, 0, 0, 0) != 0 or \
            libc.prctl(pr_set_seccomp, seccomp_mode_filter, ctypes.byref(fprog), 0, 0) != 0:
        e = ctypes.get_errno()
        raise OSError(e, "seccomp filter: " + os.strerror(e))


def engines_here() -> List[Any]:
    """The engines this process can run, to parametrize a test over: io_uring (where
    a ring can be set up) and threads. CI's first pass runs both; its pass with
    kernel.io_uring_disabled=2 runs the thread engine, and tests that io_uring asked
    for by name is refused there (test_faults, test_engine)."""
    from asyncload import _sysinfo

    return _sysinfo.runnable_engines()
