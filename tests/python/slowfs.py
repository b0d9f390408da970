"""Mount tools/slowfs (a slow, read-only FUSE mirror) for tests and benchmarks.

Used by the pytest fixtures in conftest.py (``slowfs``, ``slowfs_factory``) and by
tools/bench_slow.py; it does not depend on pytest or asyncload.

    with SlowFS(source_dir, mount_dir, latency_ms=2, max_answer=4096) as fs:
        open(os.path.join(fs.mountpoint, "a.bin"), "rb").read()

The slowfs binary is found, in this order: the ASYNCLOAD_SLOWFS environment variable;
the newest ``slowfs`` of the repository's meson build folders (``build*/slowfs``, made by
``make build`` / ``meson compile -C build``) that is newer than tools/slowfs.c; else it is
compiled from tools/slowfs.c with ``cc`` and ``pkg-config fuse3`` into a per-user
temporary folder. tools/bench_slow.py sets ASYNCLOAD_SLOWFS to its own -O2 build (build()),
since a build folder's may be build-san's, whose ASan would slow the daemon that every
contender waits on. Mounting needs /dev/fuse (``modprobe fuse`` is tried as root) and either
root or a usable fusermount3.

Stopping always releases stalls, unmounts (``fusermount3 -u``, else ``umount -l``) and ends
the daemon (SIGTERM, then SIGKILL), also after kill_daemon() or a failed start.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from typing import Dict, Iterable, List, Optional, Sequence, Union

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SOURCE = os.path.join(REPO, "tools", "slowfs.c")

Patterns = Union[str, Iterable[str]]


class SlowFSError(RuntimeError):
    """slowfs could not be built, found or mounted."""


def build(out_dir: str) -> str:
    """Compiles tools/slowfs.c with -O2 into out_dir (kept while newer than the source)."""
    exe = os.path.join(out_dir, "slowfs")
    if os.path.exists(exe) and os.path.getmtime(exe) >= os.path.getmtime(SOURCE):
        return exe
    try:
        ver = subprocess.run(["pkg-config", "--modversion", "fuse3"], capture_output=True,
                             text=True, check=True).stdout.strip()
        flags = subprocess.run(["pkg-config", "--cflags", "--libs", "fuse3"],
                               capture_output=True, text=True, check=True).stdout.split()
    except (OSError, subprocess.CalledProcessError) as e:
        raise SlowFSError("cannot build slowfs: libfuse3-dev (pkg-config fuse3) is missing; "
                          "`make setup` installs it") from e
    major_minor = tuple(int(x) for x in ver.split(".")[:2])
    api = "312" if major_minor >= (3, 12) else "32"
    os.makedirs(out_dir, exist_ok=True)
    tmp = f"{exe}.{os.getpid()}"
    r = subprocess.run([os.environ.get("CC", "cc"), "-O2", "-Wall", "-Wextra", "-std=gnu11",
                        f"-DFUSE_USE_VERSION={api}", "-o", tmp, SOURCE, *flags, "-lpthread"],
                       capture_output=True, text=True)
    if r.returncode:
        raise SlowFSError(f"cannot build slowfs:\n{r.stderr.strip()}")
    os.replace(tmp, exe)
    return exe


def find_slowfs() -> str:
    """Path of a slowfs binary (see the module docstring for the search order)."""
    env = os.environ.get("ASYNCLOAD_SLOWFS")
    if env:
        if not os.access(env, os.X_OK):
            raise SlowFSError(f"ASYNCLOAD_SLOWFS={env} is not an executable")
        return env
    src_mtime = os.path.getmtime(SOURCE)
    built = [p for p in glob.glob(os.path.join(REPO, "build*", "slowfs"))
             + glob.glob(os.path.join(REPO, "build*", "tools", "slowfs"))
             if os.access(p, os.X_OK) and os.path.getmtime(p) >= src_mtime]
    if built:
        return max(built, key=os.path.getmtime)
    return build(os.path.join(tempfile.gettempdir(), f"asyncload-slowfs-{os.getuid()}"))


def ensure_fuse() -> None:
    """Make /dev/fuse usable: load the module as root if it is missing."""
    if not os.path.exists("/dev/fuse") and os.getuid() == 0:
        subprocess.run(["modprobe", "fuse"], capture_output=True)
    if not os.path.exists("/dev/fuse"):
        raise SlowFSError("/dev/fuse is missing (no fuse module: `modprobe fuse` as root)")


def _mount_entry(mountpoint: str) -> Optional[List[str]]:
    """The /proc/self/mountinfo fields of mountpoint, without stat()ing it (a stat of a
    hung FUSE mount would hang too)."""
    want = os.path.realpath(mountpoint)
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            # mountinfo escapes space, tab, newline and backslash as octal
            mp = fields[4].encode().decode("unicode_escape")
            if mp == want:
                return fields
    return None


def is_mounted(mountpoint: str) -> bool:
    return _mount_entry(mountpoint) is not None


def _patterns(p: Optional[Patterns]) -> Optional[str]:
    if p is None:
        return None
    items = [p] if isinstance(p, str) else list(p)
    return ":".join(items) if items else None


class SlowFS:
    """One slowfs mount: source mirrored read-only at mountpoint, each operation slowed.

    latency_ms/jitter_ms: added to every lookup, getattr, open, read, readdir (jitter is a
    uniform 0..jitter_ms on top). eio_open/eio_read: fnmatch patterns (on the path in the
    mount or the base name) whose opens/reads fail with EIO. einval_direct: patterns whose
    reads fail with EINVAL when the file was opened with O_DIRECT. stall: patterns whose opens
    wait until release() (rearm() makes later opens wait again). max_answer: each read
    answers at most that many bytes, so read(2) returns short counts.
    """

    def __init__(self, source: str, mountpoint: str, *, latency_ms: float = 0.0,
                 jitter_ms: float = 0.0, eio_open: Optional[Patterns] = None,
                 eio_read: Optional[Patterns] = None, einval_direct: Optional[Patterns] = None,
                 stall: Optional[Patterns] = None,
                 max_answer: Optional[int] = None, threads: Optional[int] = None,
                 max_background: Optional[int] = None,
                 extra_args: Sequence[str] = ()) -> None:
        self.source = os.path.abspath(source)
        self.mountpoint = os.path.abspath(mountpoint)
        self.latency_ms = latency_ms
        self._ctl = tempfile.mkdtemp(prefix="slowfs-ctl-")
        # the release file lives outside the source so it never shows in the mount
        self.release_file = os.path.join(self._ctl, "release")
        self.stats_file = os.path.join(self._ctl, "stats.json")
        self.log_file = os.path.join(self._ctl, "slowfs.log")
        args = [f"--latency={latency_ms}", f"--jitter={jitter_ms}",
                f"--release-file={self.release_file}", f"--stats={self.stats_file}"]
        for flag, value in (("--eio-open", _patterns(eio_open)),
                            ("--eio-read", _patterns(eio_read)),
                            ("--einval-direct", _patterns(einval_direct)),
                            ("--stall", _patterns(stall)), ("--max-answer", max_answer),
                            ("--threads", threads), ("--max-background", max_background)):
            if value is not None:
                args.append(f"{flag}={value}")
        self.args = args + list(extra_args)
        self.proc: Optional[subprocess.Popen[bytes]] = None
        self.conn: Optional[str] = None     # the FUSE connection id (minor of st_dev)
        self.final_stats: Dict[str, int] = {}   # stats() as the daemon left them, after stop()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 10.0) -> "SlowFS":
        ensure_fuse()
        exe = find_slowfs()
        os.makedirs(self.mountpoint, exist_ok=True)
        if is_mounted(self.mountpoint):
            raise SlowFSError(f"{self.mountpoint} is already a mount point")
        with open(self.log_file, "wb") as log:
            self.proc = subprocess.Popen([exe, *self.args, "-f", "-o", "fsname=slowfs",
                                          self.source, self.mountpoint],
                                         stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        deadline = time.monotonic() + timeout
        try:
            while True:
                entry = _mount_entry(self.mountpoint)
                if entry is not None:
                    self.conn = entry[2].split(":")[1]
                    return self
                if self.proc.poll() is not None:
                    raise SlowFSError(f"slowfs exited with status {self.proc.returncode}: "
                                      f"{self.log()}")
                if time.monotonic() > deadline:
                    raise SlowFSError(f"slowfs did not mount within {timeout} s: {self.log()}")
                time.sleep(0.01)
        except BaseException:
            self.stop()
            raise

    def log(self) -> str:
        try:
            with open(self.log_file, errors="replace") as f:
                return f.read().strip()[-2000:]
        except OSError:
            return ""

    def path(self, *parts: str) -> str:
        """A path inside the mount."""
        return os.path.join(self.mountpoint, *parts)

    def release(self) -> None:
        """Let stalled opens (and later ones) go on."""
        open(self.release_file, "w").close()

    def rearm(self) -> None:
        """Make later opens of stall paths wait again."""
        try:
            os.unlink(self.release_file)
        except FileNotFoundError:
            pass

    def _read_stats(self) -> Dict[str, int]:
        try:
            with open(self.stats_file) as f:
                return json.load(f)
        except (OSError, ValueError):
            return {}

    def stats(self, settle: bool = False) -> Dict[str, int]:
        """Op counters of the daemon: at most 50 ms old, or with settle=True, unchanged
        over two of the daemon's rewrites (the operations already answered are all in)."""
        cur = self._read_stats()
        if not settle:
            return cur
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            time.sleep(0.12)
            nxt = self._read_stats()
            if nxt == cur and nxt:
                break
            cur = nxt
        return cur

    def wait_stalled(self, n: int = 1, timeout: float = 5.0) -> None:
        """Wait until n opens are held in the stall."""
        deadline = time.monotonic() + timeout
        while self.stats().get("stalled_now", 0) < n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{n} stalled opens not seen within {timeout} s: "
                                   f"{self.stats()}")
            time.sleep(0.01)

    def kill_daemon(self) -> None:
        """SIGKILL the daemon, as a crashed server: the mount stays, and every request on
        it fails (ENOTCONN) until stop() unmounts it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def _unmount(self) -> None:
        if not is_mounted(self.mountpoint):
            return
        for cmd in (["fusermount3", "-u", "-q", self.mountpoint],
                    ["umount", self.mountpoint], ["umount", "-l", self.mountpoint]):
            try:
                subprocess.run(cmd, capture_output=True, timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                continue
            if not is_mounted(self.mountpoint):
                return

    def stop(self) -> None:
        """Release stalls, unmount, end the daemon; safe to call more than once."""
        if self.proc is not None and self.proc.poll() is None:
            self.release()
        self._unmount()
        if self.proc is not None:
            for sig, wait in ((None, 2.0), (signal.SIGTERM, 2.0), (signal.SIGKILL, 5.0)):
                if sig is not None and self.proc.poll() is None:
                    self.proc.send_signal(sig)
                try:
                    self.proc.wait(wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        # a daemon killed before the unmount leaves the mount behind
        self._unmount()
        if is_mounted(self.mountpoint):
            raise SlowFSError(f"could not unmount {self.mountpoint}")
        self.final_stats = self._read_stats() or self.final_stats
        shutil.rmtree(self._ctl, ignore_errors=True)

    def __enter__(self) -> "SlowFS":
        return self.start() if self.proc is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()
