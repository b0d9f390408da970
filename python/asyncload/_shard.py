"""Which samples each rank and DataLoader worker reads, and how far a worker got.

Owns the epoch order: ``torch.randperm(N)`` seeded with ``seed + epoch`` (as
``DistributedSampler``), padded or cut to a multiple of the world size; rank
``r`` takes every ``world``-th index from ``r``, DataLoader worker ``w`` of
``W`` every ``W``-th of those from ``w``. Also where rank and world size come
from (:func:`dist_info`), and ``_Progress``, the record of which positions of a
share were handed out that ``FileStream.state_dict()`` saves and a resumed
iteration skips.
"""

from __future__ import annotations

import os
from typing import List, Tuple

import torch


def dist_info() -> Tuple[int, int, int, int]:
    """(rank, world_size, local_rank, local_world_size) of this process.

    From ``torch.distributed`` when it is initialised, else from the
    ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``/``LOCAL_WORLD_SIZE`` variables
    torchrun sets, else one process. Without the LOCAL_ variables each rank
    counts as its own node (its own loader).
    """
    env = os.environ
    rank, world = 0, 1
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
    elif "RANK" in env and "WORLD_SIZE" in env:
        rank, world = int(env["RANK"]), int(env["WORLD_SIZE"])
    if "LOCAL_RANK" in env and "LOCAL_WORLD_SIZE" in env and world > 1:
        return rank, world, int(env["LOCAL_RANK"]), int(env["LOCAL_WORLD_SIZE"])
    return rank, world, 0, 1


def shard_indices(n: int, epoch: int, *, seed: int = 0, shuffle: bool = True,
                  drop_last: bool = False, rank: int = 0, world_size: int = 1,
                  worker: int = 0, num_workers: int = 1) -> List[int]:
    """The sample indices of one rank's DataLoader worker in one epoch.

    The rank's share is exactly ``DistributedSampler(shuffle, seed,
    drop_last)``'s; the worker takes every ``num_workers``-th of it.
    """
    if shuffle:
        g = torch.Generator()
        g.manual_seed(seed + epoch)
        order: List[int] = torch.randperm(n, generator=g).tolist()
    else:
        order = list(range(n))
    if drop_last and n % world_size:
        total = (n // world_size) * world_size
        order = order[:total]
    else:
        total = -(-n // world_size) * world_size
        pad = total - n
        if pad and order:
            order += (order * -(-pad // len(order)))[:pad]
    return order[rank:total:world_size][worker::num_workers]


def _rank_len(n: int, world: int, drop_last: bool) -> int:
    return n // world if drop_last and n % world else -(-n // world)


class _Progress:
    """Which positions of one worker's share were handed out this epoch:
    everything below ``low``, plus ``extra`` (completion order is close to
    request order, so this stays small)."""

    __slots__ = ("epoch", "worker", "num_workers", "size", "low", "extra")

    def __init__(self, epoch: int, worker: int, num_workers: int, size: int) -> None:
        self.epoch = epoch
        self.worker = worker
        self.num_workers = num_workers
        self.size = size
        self.low = 0
        self.extra: set = set()

    def mark(self, pos: int) -> None:
        self.extra.add(pos)
        while self.low in self.extra:
            self.extra.remove(self.low)
            self.low += 1

    def done(self, pos: int) -> bool:
        return pos < self.low or pos in self.extra

