"""FileStream's read loop: one worker's pass over its share of an epoch, never draining.

Each worker requests ahead while it yields, refilling in bursts as fill()
does (the same ``Window``), across batch boundaries; once its share is all
requested it requests the first samples of the next epoch and leaves them (a
``_Carry``) for the next iteration in this process to adopt.

Tags: ``nonce << 48 | epoch << 32 | position`` so completions left in a slot
by an earlier holder (a previous epoch's worker process) never match.
"""

from __future__ import annotations

import errno
from collections import deque
from typing import TYPE_CHECKING, Any, Deque, Dict, Iterator, List, Optional, Tuple

from ._fill import FIELDS, Window, drain, encode_item, give_back
from ._lowlevel import check_error, ffi, lib
from ._worker import Worker

if TYPE_CHECKING:
    from ._stream import FileStream

_POS_BITS = 32
_EPOCH_MASK = 0xFFFF
_NONCE_MASK = 0xFFFF


class _Carry:
    """Next-epoch reads a finished iteration left in flight in this process."""

    __slots__ = ("epoch", "worker", "num_workers", "waiting", "ready", "count")

    def __init__(self, epoch: int, worker: int, num_workers: int) -> None:
        self.epoch = epoch
        self.worker = worker
        self.num_workers = num_workers
        self.waiting: Dict[int, int] = {}   # tag -> position
        self.ready: Dict[int, Any] = {}     # position -> item (or _SKIPPED)
        self.count = 0                      # positions 0..count-1 were requested


_SKIPPED = object()


class _Failed:
    """A next-epoch sample whose load failed: raised when its turn comes, not
    in the middle of the epoch that happened to read it."""

    __slots__ = ("exc",)

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


def _submit(wptr: Any, item: Any, tag: int) -> bool:
    """Queue one load; False when the queue is full (EAGAIN). Raises for a bad item."""
    raw, off, n, path = encode_item(item)
    rc = lib.asyncload_worker_submit(wptr, raw, off, n, tag)
    if rc == -errno.EAGAIN:
        return False
    check_error(rc, path)
    return True


def run(stream: "FileStream") -> Iterator[Any]:
    """One pass of this process over its share of the stream's current epoch."""
    worker = stream._claim()
    epoch, wid, nw, share, prog = stream._plan()
    loader = worker.loader
    depth = loader.queue_depth
    win = Window(depth)
    window = 2 * depth  # ordered: how far requests may run ahead of the next yield
    order = [p for p in range(len(share)) if not prog.done(p)]
    tag_base = (stream._nonce & _NONCE_MASK) << 48

    def tag_of(ep: int, pos: int) -> int:
        return tag_base | (ep & _EPOCH_MASK) << _POS_BITS | pos

    waiting: Dict[int, int] = {}        # tag -> position, this epoch
    outbox: Deque[Tuple[int, Any]] = deque()  # (position, item) to yield
    held: Dict[int, Any] = {}           # ordered: position -> item, ahead of k
    s = 0                               # order[:s] requested (or adopted)
    k = 0                               # ordered: order[:k] yielded

    carry, stream._carry = stream._carry, None
    if carry is not None:
        if (carry.epoch == epoch and carry.worker == wid and carry.num_workers == nw
                and prog.low == 0 and not prog.extra):
            waiting.update(carry.waiting)
            s = carry.count
            for pos, item in carry.ready.items():
                if stream.ordered:
                    held[pos] = item
                else:
                    outbox.append((pos, item))
            carry = None
            stream._adopted += 1
        else:
            drain(worker, carry.waiting)
            carry = None

    # The epoch this process will most likely run next: the next one,
    # unless it just saw the same epoch twice (set_epoch never called).
    next_epoch = epoch if stream._last_epoch == epoch else epoch + 1
    stream._last_epoch = epoch
    ahead: Optional[_Carry] = None
    next_share: Optional[List[int]] = None

    stream._progress = prog
    wptr = worker._handle()
    release = lib.asyncload_entry_release
    fields = lib.al_py_entry_fields
    make = worker._entry_type._from_fields
    paths = stream._paths
    out = ffi.new("asyncload_entry *[]", depth)
    fbuf = ffi.new("uint64_t[]", FIELDS * depth)
    finished = False
    got = taken = 0  # entries of the current batch, and how many were looked at
    try:
        while True:
            # Refill in bursts (one loader wake-up a burst) before every
            # yield: the queue stays full while the consumer collates.
            in_flight = len(waiting) + (len(ahead.waiting) if ahead else 0)
            if in_flight <= win.low:
                full = False
                while s < len(order) and not (stream.ordered and s - k >= window):
                    if in_flight >= win.size:
                        full = True
                        break
                    pos = order[s]
                    tag = tag_of(epoch, pos)
                    if not _submit(wptr, paths[share[pos]], tag):
                        full = True
                        break
                    waiting[tag] = pos
                    s += 1
                    in_flight += 1
                if not full and s >= len(order):
                    if ahead is None or next_share is None:
                        ahead = _Carry(next_epoch, wid, nw)
                        next_share = stream.indices(next_epoch, wid, nw)
                    while ahead.count < min(depth, len(next_share)) and in_flight < win.size:
                        pos = ahead.count
                        tag = tag_of(next_epoch, pos)
                        if not _submit(wptr, paths[next_share[pos]], tag):
                            break
                        ahead.waiting[tag] = pos
                        ahead.count += 1
                        in_flight += 1
            if stream.ordered:
                while k < len(order) and order[k] in held:
                    outbox.append((order[k], held.pop(order[k])))
                    k += 1
            if outbox:
                pos, item = outbox.popleft()
                if isinstance(item, _Failed):
                    raise item.exc
                prog.mark(pos)
                if item is not _SKIPPED:
                    yield item
                continue
            if not waiting and s >= len(order) and not held:
                finished = True
                stream._carry = ahead
                return
            if not waiting and worker.in_flight == 0 and (ahead is None or not ahead.waiting):
                raise RuntimeError(
                    "asyncload.torch.FileStream: no free entry and none in flight")
            got = taken = 0
            got = worker._wait_into(out, depth, None)
            fields(out, got, fbuf)   # every entry's fields in one C call
            f = ffi.unpack(fbuf, FIELDS * got)
            while taken < got:
                j = FIELDS * taken
                ptr = out[taken]
                taken += 1   # from here on the entry is released by what takes it
                win.saw(f[j + 4], f[j + 3])
                tag = f[j + 2]
                pos_now = waiting.pop(tag, None)
                if pos_now is not None:
                    index = share[pos_now]
                    entry = make(worker, ptr, paths[index], f[j], f[j + 1], tag, f[j + 3])
                    item = stream._convert(entry, index)
                    if stream.ordered:
                        held[pos_now] = item
                    else:
                        outbox.append((pos_now, item))
                    continue
                pos_next = ahead.waiting.pop(tag, None) if ahead is not None else None
                if pos_next is not None and ahead is not None and next_share is not None:
                    index = next_share[pos_next]
                    entry = make(worker, ptr, paths[index], f[j], f[j + 1], tag, f[j + 3])
                    try:
                        ahead.ready[pos_next] = stream._convert(entry, index)
                    except Exception as e:  # noqa: BLE001 - its epoch raises it
                        ahead.ready[pos_next] = _Failed(e)
                    continue
                release(ptr)  # left in the slot by an earlier holder
    finally:
        if not finished:
            stream._progress = prog
            leftover = dict(waiting)
            if ahead is not None:
                leftover.update(ahead.waiting)
            give_back(out, fbuf, taken, got, leftover)  # taken from the slot, not looked at
            drain(worker, leftover)
