"""One loader per node for FileStream: the handle file local rank 0 publishes, the attach.

Local rank 0 starts the loader and writes its handle to a file in a per-job
directory; the other local ranks read that file and attach. Here: where that
directory is, the file's atomic write, the attach that waits for it, and the
finalizer that removes it and stops the loader.
"""

from __future__ import annotations

import errno
import hashlib
import os
import socket
import tempfile
import threading
import time
from typing import Optional

from ._loader import Loader
from .torch import _stop_loader

# How long a local rank > 0 waits for local rank 0 to publish its loader.
_ATTACH_TIMEOUT_S = 120.0

# FileStreams made with a shared node loader, in this process: the n-th one
# of every local rank shares one handle file (ranks build them in one order).
_node_seq = 0
_node_seq_lock = threading.Lock()


def next_handle_file() -> str:
    """The handle file of the next FileStream made with a shared node loader."""
    global _node_seq
    with _node_seq_lock:
        seq = _node_seq
        _node_seq += 1
    return os.path.join(_job_dir(), f"stream-{seq}.handle")


def _job_dir() -> str:
    """The directory of this job's handle files on this node (mode 0700).

    Keyed by TORCHELASTIC_RUN_ID (torchrun), else MASTER_ADDR:MASTER_PORT,
    plus the host name, so two jobs, or two nodes sharing /tmp, never meet.
    ASYNCLOAD_RUN_DIR replaces the base directory.
    """
    env = os.environ
    run = env.get("TORCHELASTIC_RUN_ID", "")
    key = run if run and run != "none" else (
        f"{env.get('MASTER_ADDR', '')}:{env.get('MASTER_PORT', '')}")
    digest = hashlib.sha1(f"{key}|{socket.gethostname()}".encode()).hexdigest()[:16]
    base = env.get("ASYNCLOAD_RUN_DIR") or os.path.join(
        tempfile.gettempdir(), f"asyncload-{os.getuid()}")
    os.makedirs(base, mode=0o700, exist_ok=True)
    path = os.path.join(base, f"job-{digest}")
    os.makedirs(path, mode=0o700, exist_ok=True)
    return path


def _publish(path: str, handle: str) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(handle)
    os.replace(tmp, path)  # atomic: a reader sees the old file or the whole new one


def _attach_published(path: str, timeout: float) -> Loader:
    """Attach to the loader whose handle local rank 0 writes to ``path``.

    A file left by an earlier job names a loader that is gone (attach raises
    FileNotFoundError): keep waiting for this job's.
    """
    deadline = time.monotonic() + timeout
    last: Optional[BaseException] = None
    while True:
        try:
            with open(path) as f:
                handle = f.read().strip()
            if handle:
                return Loader.attach(handle)
        except (FileNotFoundError, ValueError) as e:
            last = e
        if time.monotonic() >= deadline:
            raise TimeoutError(
                errno.ETIMEDOUT,
                f"asyncload.torch.FileStream: local rank 0 did not publish its loader "
                f"within {timeout:.0f} s (last: {last!r}); is it building the same "
                "FileStreams in the same order?", path)
        time.sleep(0.05)


def _remove_file(path: str, owner_pid: int) -> None:
    if os.getpid() == owner_pid:
        try:
            os.unlink(path)
            os.rmdir(os.path.dirname(path))  # the job's last stream: leave nothing behind
        except OSError:
            pass


def _stop_stream(loader: Loader, owner_pid: int, handle_file: Optional[str]) -> None:
    """Finalizer of local rank 0's stream: remove the handle file, stop the loader."""
    if handle_file is not None:
        _remove_file(handle_file, owner_pid)
    _stop_loader(loader, owner_pid)
