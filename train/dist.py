"""``torch.distributed`` for the trainer: one process (``python -m train fit``) or N under ``torchrun``.

``torchrun`` sets ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` and the rendezvous; :func:`setup` joins the
process group (``nccl`` on CUDA, ``gloo`` on CPU) and picks this process's device. Without those
variables everything here is a no-op, so a single process runs exactly the code it always ran.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Only this process writes checkpoints, plots and reports, and pushes."""
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def sum_(self, t: torch.Tensor) -> torch.Tensor:
        """In-place sum over processes (CPU tensors are fine: gloo, or moved for nccl)."""
        if self.world > 1:
            dev = t.device
            work = t.cuda() if dist.get_backend() == "nccl" and dev.type != "cuda" else t
            dist.all_reduce(work)
            if work is not t:
                t.copy_(work.to(dev))
        return t

    def min(self, value: int) -> int:
        t = torch.tensor([value], dtype=torch.int64)
        if self.world > 1:
            t = t.cuda() if dist.get_backend() == "nccl" else t
            dist.all_reduce(t, op=dist.ReduceOp.MIN)
        return int(t.item())

    def agree(self, flag: bool) -> bool:
        """Rank 0's decision, for every rank (time limits: each process's clock differs)."""
        if self.world == 1:
            return flag
        box = [flag]
        dist.broadcast_object_list(box, src=0)
        return bool(box[0])

    def sum_array(self, a: np.ndarray) -> np.ndarray:
        return self.sum_(torch.from_numpy(np.ascontiguousarray(a))).numpy() if self.world > 1 else a


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def setup(device: str = "auto") -> tuple[Dist, torch.device]:
    """Join torchrun's process group when launched by it; return who we are and our device."""
    if int(os.environ.get("WORLD_SIZE", "1")) == 1:
        return Dist(), pick_device(device)
    cuda = pick_device(device).type == "cuda"
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if cuda:
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        # rank 0 may decode a uint8 cache or compute a trunk cache while the others wait at a barrier
        dist.init_process_group("nccl" if cuda else "gloo", timeout=timedelta(hours=2))
    d = Dist(dist.get_rank(), dist.get_world_size(), local_rank)
    return d, torch.device(f"cuda:{local_rank}" if cuda else "cpu")


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
