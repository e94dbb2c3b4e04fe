"""Data-parallel training across the processes `torchrun` starts: PyTorch's DistributedDataParallel over gloo on
the CPU and NCCL on CUDA.

The recipe's batch size is the global batch: every rank draws the same permutation of the training split and
trains on its own contiguous slice of each global batch, so N processes take the optimizer steps one process
would. Augmentation and dropout draw from per-rank streams reseeded at each epoch from (seed, rank, epoch), so a
job killed and started again continues exactly from the last checkpoint. BatchNorm statistics are re-estimated
before every evaluation from the same images on every rank (the weights are identical), and evaluation is
sharded, its counts summed across ranks. Rank 0 alone writes checkpoints, curves, weights and database rows.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

# A peer that stops answering (its process died) ends a collective after this long instead of hanging forever;
# torchrun normally tears the job down well before.
COLLECTIVE_TIMEOUT = timedelta(minutes=10)


@dataclass(frozen=True)
class Distributed:
    """This process's place in a data-parallel job."""

    rank: int
    world_size: int
    local_rank: int
    local_world_size: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def batch_slice(self, index: torch.Tensor) -> torch.Tensor:
        """This rank's contiguous part of a global batch (parts differ in size by at most one image)."""
        return index.tensor_split(self.world_size)[self.rank]

    def eval_shard(self, index: torch.Tensor) -> torch.Tensor:
        """Every world_size-th image, starting at this rank's: each image is scored by exactly one rank."""
        return index[self.rank::self.world_size]

    def total(self, value: float) -> float:
        """The sum of `value` over every rank."""
        tensor = torch.tensor([value], dtype=torch.float64,
                              device="cuda" if dist.get_backend() == "nccl" else "cpu")
        dist.all_reduce(tensor)
        return float(tensor.item())

    def share(self, value: object) -> object:
        """Rank 0's `value` on every rank."""
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        dist.barrier()

    def stream_seed(self, seed: int, epoch: int) -> int:
        """The seed of this rank's augmentation and dropout streams in `epoch`."""
        return (seed * 1_000_003 + epoch) * 4096 + self.rank


def from_environment(device: str) -> Distributed | None:
    """The job `torchrun` started this process in (None when it runs alone); joins its process group."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return None
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "cuda":
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device == "cuda" else "gloo", timeout=COLLECTIVE_TIMEOUT)
    return Distributed(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local_rank,
                       local_world_size=int(os.environ.get("LOCAL_WORLD_SIZE", str(world_size))))


def leave() -> None:
    """Leave the process group, if this process joined one."""
    if dist.is_initialized():
        dist.destroy_process_group()
