"""Many processes through torch.distributed: `torchrun --nproc-per-node N -m nima run ...`.

torchrun (or `nima run --nproc N`, which calls it) starts the processes and sets RANK,
WORLD_SIZE and LOCAL_RANK; each joins the process group (gloo on the CPU, nccl on CUDA). Every
rank draws the same windows for a step and trains on its own share (`Batches`), DDP averages
the gradients, and rank 0 alone writes the run directory.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    """This process's place among the training processes (rank 0 of 1 when alone)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    def broadcast(self, value: Any) -> Any:
        """Rank 0's `value` on every rank (a picklable Python object: paths, flags)."""
        if self.size == 1:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def any(self, flag: bool, device: torch.device) -> bool:
        """True on every rank if it is True on any (a Ctrl-C that reached some ranks only)."""
        if self.size == 1:
            return flag
        t = torch.tensor([float(flag)], device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def mean(self, t: torch.Tensor) -> torch.Tensor:
        """The mean of `t` over the ranks (the step's loss over the whole effective batch)."""
        if self.size > 1:
            dist.all_reduce(t, op=dist.ReduceOp.AVG if t.is_cuda else dist.ReduceOp.SUM)
            if not t.is_cuda:  # gloo has no AVG
                t /= self.size
        return t

    def barrier(self) -> None:
        if self.size > 1:
            dist.barrier()


ALONE = World()  # one process, no process group


def join(device: torch.device) -> tuple[World, torch.device]:
    """Join the process group torchrun describes in the environment, if any; CUDA ranks take
    the GPU of their local rank."""
    if "WORLD_SIZE" not in os.environ or int(os.environ["WORLD_SIZE"]) == 1:
        return World(), device
    world = World(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]),
                  int(os.environ.get("LOCAL_RANK", 0)))  # fmt: skip
    if device.type == "cuda":
        device = torch.device("cuda", world.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return world, device


def leave() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def launch(nproc: int, argv: Sequence[str]) -> int:
    """`nima run --nproc N ...`: run `torchrun --nproc-per-node N -m nima <argv>` (argv without
    --nproc) and return its exit code."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc-per-node={nproc}", "-m", "nima", *argv]  # fmt: skip
    return subprocess.run(command).returncode
