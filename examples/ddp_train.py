"""A small CPU DDP training loop over asyncload.torch.FileStream, and its check.

Run (also a CI test, tests/python/test_stream.py):

    torchrun --nproc_per_node=2 examples/ddp_train.py [--data DIR] [--files 200]

Two ranks (gloo) share one loader process for the node; each rank reads its
share through a torchdata StatefulDataLoader with 2 workers. It checks that
every sample comes exactly once per epoch across both ranks (two epochs),
that the node has one loader process, and that a resume from a mid-epoch
state_dict finishes the epoch without repeats or gaps. Prints DDP_OK on
rank 0 and exits 0 when all holds, else exits 1.
"""

from __future__ import annotations

import argparse
import os
import struct
import sys
import tempfile
from collections import Counter
from typing import Any, List, Tuple

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
from torchdata.stateful_dataloader import StatefulDataLoader

from asyncload.torch import FileStream

FEATURES = 15  # float32 features after the 4-byte sample id


def make_data(root: str, n: int) -> List[str]:
    """n files: a 4-byte id then FEATURES float32s; the target is their sum > 0."""
    os.makedirs(root, exist_ok=True)
    g = torch.Generator().manual_seed(0)
    paths = []
    for i in range(n):
        path = os.path.join(root, f"s{i:05d}.bin")
        if not os.path.exists(path):
            x = torch.randn(FEATURES, generator=g)
            tmp = f"{path}.tmp"
            with open(tmp, "wb") as f:
                f.write(struct.pack("<I", i) + x.numpy().tobytes())
            os.replace(tmp, path)
        paths.append(path)
    return paths


def decode(data: memoryview) -> Tuple[int, torch.Tensor]:
    """Module level, so spawn workers can unpickle it."""
    (i,) = struct.unpack_from("<I", data)
    return i, torch.frombuffer(bytearray(data[4:]), dtype=torch.float32)


def collate(batch: List[Tuple[int, torch.Tensor]]) -> Tuple[List[int], torch.Tensor, torch.Tensor]:
    ids = [i for i, _ in batch]
    x = torch.stack([t for _, t in batch])
    return ids, x, (x.sum(dim=1, keepdim=True) > 0).float()


def make_loader(stream: FileStream) -> StatefulDataLoader:
    return StatefulDataLoader(stream, batch_size=8, num_workers=2, collate_fn=collate,
                              persistent_workers=True)


def gather_ids(ids: List[int]) -> Counter:
    every: List[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(every, ids)
    return Counter(i for part in every for i in part)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", help="sample directory (default: a demo set in $TMPDIR)")
    ap.add_argument("--files", type=int, default=200)
    ap.add_argument("--resume-after", type=int, default=5, help="batches before the checkpoint")
    args = ap.parse_args()

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    root = args.data or os.path.join(tempfile.gettempdir(), f"asyncload-ddp-demo-{os.getuid()}")
    if int(os.environ.get("LOCAL_RANK", "0")) == 0:
        make_data(root, args.files)
    dist.barrier()
    paths = make_data(root, args.files)  # existing files: just the list

    stream = FileStream(paths, decode, num_workers=2, queue_depth=16, seed=1)
    model = DDP(torch.nn.Linear(FEATURES, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    lossf = torch.nn.BCEWithLogitsLoss()
    failures: List[str] = []

    def check(what: str, counts: Counter) -> None:
        if rank != 0:
            return
        missing = [i for i in range(args.files) if counts[i] == 0]
        twice = sorted(i for i, c in counts.items() if c > 1)
        if missing or twice or len(counts) != args.files:
            failures.append(f"{what}: missing {missing[:10]}, repeated {twice[:10]}")
        else:
            print(f"{what}: {sum(counts.values())} samples, each exactly once", flush=True)

    def train(dl: StatefulDataLoader, stop_after: int = -1) -> Tuple[List[int], float]:
        ids: List[int] = []
        loss = torch.zeros(())
        for step, (bid, x, y) in enumerate(dl):
            opt.zero_grad()
            loss = lossf(model(x), y)
            loss.backward()  # DDP all-reduces: both ranks must take the same number of steps
            opt.step()
            ids += bid
            if step + 1 == stop_after:
                break
        return ids, float(loss.detach())

    # Two full epochs; DDP needs equal step counts per rank, which the
    # DistributedSampler-style split gives (files divisible by world x workers x batch).
    dl = make_loader(stream)
    for epoch in range(2):
        stream.set_epoch(epoch)
        ids, loss = train(dl)
        check(f"epoch {epoch} (loss {loss:.3f})", gather_ids(ids))

    # One loader process for the node: every rank maps the same region (the
    # handle's last field is the region's random token), and only local rank 0
    # spawned a process.
    handles: List[Any] = [None] * world
    dist.all_gather_object(handles, (stream.loader.handle, stream.loader.pid))
    if rank == 0:
        spawned = [pid for _, pid in handles if pid is not None]
        if len({h.rsplit(':', 1)[-1] for h, _ in handles}) != 1 or len(spawned) != 1:
            failures.append(f"expected one loader for the node, got {handles}")
        else:
            print(f"one loader process for the node (pid {spawned[0]})", flush=True)

    # Epoch 2: checkpoint mid-epoch, then a fresh DataLoader resumes from it.
    stream.set_epoch(2)
    dl = make_loader(stream)
    first, _ = train(dl, stop_after=args.resume_after)
    state = dl.state_dict()
    del dl
    resumed = make_loader(stream)
    resumed.load_state_dict(state)
    rest, _ = train(resumed)
    del resumed
    counts = gather_ids(first + rest)
    check(f"epoch 2 resumed after {args.resume_after} batches "
          f"({len(first)} + {len(rest)} on rank 0)", counts)

    dist.barrier()  # the loader lives in local rank 0: close only when all are done
    stream.close()
    dist.destroy_process_group()
    if rank == 0:
        for f in failures:
            print("FAIL:", f, flush=True)
        if not failures:
            print("DDP_OK", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
