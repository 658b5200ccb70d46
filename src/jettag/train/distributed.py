"""torchrun / DDP plumbing: process group set-up, and gathering predictions across ranks.

``torchrun --nproc-per-node N -m jettag.cli train ...`` (or ``--nnodes``/``--rdzv-*`` for several
machines) sets ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``; ``setup`` then joins the process group (NCCL on
GPUs, gloo on CPU) and picks the device. Every rank reads the whole data set and trains on its own
shard (``BatchLoader(rank, world_size)``). Evaluation gathers every rank's (jet index, probabilities)
rows (``all_gather_rows``) and computes loss and every metric once on the full, jet-ordered arrays,
so a distributed evaluation gives the same figures as a single process.
"""

from __future__ import annotations

import importlib
import json
import os
from dataclasses import dataclass, field
from datetime import timedelta

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def pick_device(preference: str = "auto", local_rank: int = 0) -> torch.device:
    """``auto`` = the local GPU when there is one, else CPU; or an explicit torch device string."""
    if preference == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    dev = torch.device(preference)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device(f"cuda:{local_rank}")
    return dev


def setup(device: str = "auto") -> DistInfo:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1); a no-op otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo(device=pick_device(device))
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    dev = pick_device(device, local)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        # DDP's constructor imports this module; imported after the group exists, its functions'
        # ``group=group.WORLD`` defaults would hold the group forever, so ``cleanup`` could not free
        # it and gloo's worker threads would outlive the interpreter (a thread finishing a barrier
        # then aborts the process at exit: "terminate called without an active exception")
        importlib.import_module("torch.distributed.nn.functional")

        backend = "nccl" if dev.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, timeout=timedelta(minutes=30))
    return DistInfo(rank=rank, world_size=world, local_rank=local, device=dev)


def cleanup() -> None:
    """Leave the process group; its backend's threads are joined here, not at interpreter exit."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.distributed:
        dist.barrier()


def all_gather_rows(values: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Concatenate each rank's rows (first dimension may differ between ranks), in rank order."""
    if not info.distributed:
        return values
    local = values.detach().to(info.device)
    n = torch.tensor([local.shape[0]], device=info.device)
    sizes = [torch.zeros_like(n) for _ in range(info.world_size)]
    dist.all_gather(sizes, n)
    longest = int(max(s.item() for s in sizes))
    padded = local.new_zeros((longest, *local.shape[1:]))
    padded[: local.shape[0]] = local
    parts = [torch.zeros_like(padded) for _ in range(info.world_size)]
    dist.all_gather(parts, padded)
    return torch.cat([p[: int(s.item())] for p, s in zip(parts, sizes)]).cpu()


def broadcast_object(obj: object, info: DistInfo) -> object:
    """Rank 0's value of a small JSON-serialisable object (e.g. the path of a generated sample).

    Sent as JSON bytes, not through ``broadcast_object_list``, which pickles: no rank ever unpickles.
    """
    if not info.distributed:
        return obj
    data = json.dumps(obj).encode() if info.is_main else b""
    size = torch.tensor([len(data)], dtype=torch.int64, device=info.device)
    dist.broadcast(size, src=0)
    buf = torch.zeros(int(size.item()), dtype=torch.uint8, device=info.device)
    if info.is_main:
        buf.copy_(torch.frombuffer(bytearray(data), dtype=torch.uint8))
    dist.broadcast(buf, src=0)
    return json.loads(bytes(buf.cpu().tolist()).decode())
