"""Many processes through torch.distributed: `torchrun --nproc-per-node N -m nima run ...`.

torchrun (or `nima run --nproc N`, which calls it) starts the processes and sets RANK,
WORLD_SIZE and LOCAL_RANK; each joins the process group (gloo on the CPU, nccl on CUDA). Every
rank draws the same windows for a step and trains on its own share (`Batches`), DDP averages
the gradients (or, under train.parallel = "fsdp", FSDP2 shards parameters, gradients and
optimizer state over the ranks), and rank 0 alone writes the run directory.

Under FSDP the checkpoints hold the full, unsharded state, gathered onto rank 0's CPU, in the
same format as a one-process or DDP run's: weights under the plain model's names (a tied weight
once) and the optimizer state as `Optimizer.state_dict()` gives it (parameters numbered in
param-group order), so `best` samples with `nima generate` and `last` resumes either way.
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
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.tensor import DTensor


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


def shard(model: torch.nn.Module) -> None:
    """FSDP2, as torch's docs advise: `fully_shard` each transformer block (the modules of
    `model.blocks`, where the model has them), then the root (embeddings, final norm, head: a
    tied head stays with its embedding). In place: the parameters become DTensors sharded on
    dim 0 over the ranks; build the optimizer after this."""
    from torch.distributed.fsdp import fully_shard

    for block in getattr(model, "blocks", ()):
        fully_shard(block)
    fully_shard(model)


def local(t: torch.Tensor) -> torch.Tensor:
    """This rank's part of a (possibly) sharded tensor."""
    return t.to_local() if isinstance(t, DTensor) else t


def whole(t: torch.Tensor) -> torch.Tensor:
    """The full value of a (possibly) distributed tensor (a collective for a DTensor)."""
    return t.full_tensor() if isinstance(t, DTensor) else t


def aliases(model: torch.nn.Module) -> dict[str, str]:
    """Each state-dict name of the unsharded `model` -> the first name sharing its storage
    (a tied head -> the embedding): checkpoints hold each storage once, under that name."""
    first: dict[int, str] = {}
    names = {}
    for name, tensor in model.state_dict().items():
        key = tensor.data_ptr() if tensor.numel() else id(tensor)
        names[name] = first.setdefault(key, name)
    return names


def parameter_names(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> list[str]:
    """The names of the optimizer's parameters in the order `Optimizer.state_dict()` numbers
    them (param groups in order): torch.distributed.checkpoint keys them by these names."""
    names = {id(p): n for n, p in model.named_parameters()}
    return [names[id(p)] for group in optimizer.param_groups for p in group["params"]]


FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)


def gather_full_state(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None,
    names: dict[str, str],
    order: list[str],
) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    """The full (unsharded) weights, each storage once (`names` from `aliases`), and the
    optimizer state numbered as `Optimizer.state_dict()` numbers it (`order` from
    `parameter_names`), on rank 0's CPU; empty on the other ranks. A collective: every rank
    calls it."""
    weights = get_model_state_dict(model, options=FULL)
    weights = {n: t for n, t in weights.items() if names.get(n, n) == n}
    if optimizer is None:
        return weights, None
    state = get_optimizer_state_dict(model, optimizer, options=FULL)
    if not state:
        return weights, {}
    index = {n: i for i, n in enumerate(order)}
    numbered = {
        "state": dict(sorted((index[n], v) for n, v in state["state"].items())),
        "param_groups": [
            {**g, "params": [index[n] for n in g["params"]]} for g in state["param_groups"]
        ],
    }  # fmt: skip
    return weights, numbered


def load_full_weights(
    model: torch.nn.Module, weights: dict[str, torch.Tensor], names: dict[str, str]
) -> None:
    """Shard the full `weights` (a checkpoint's, every rank holding them) into `model`."""
    weights = {n: weights[canonical] for n, canonical in names.items() if canonical in weights}
    set_model_state_dict(model, weights, options=StateDictOptions(full_state_dict=True))


def load_full_optimizer(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    state: dict[str, Any],
    order: list[str],
) -> None:
    """Shard a full optimizer state, numbered as `Optimizer.state_dict()` numbers it, into
    `optimizer` (every rank holding it)."""
    named = {
        "state": {order[i]: v for i, v in state["state"].items()},
        "param_groups": [{**g, "params": [order[i] for i in g["params"]]}
                         for g in state["param_groups"]],
    }  # fmt: skip
    set_optimizer_state_dict(
        model, optimizer, named, options=StateDictOptions(full_state_dict=True)
    )


def leave() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def launch(nproc: int, argv: Sequence[str]) -> int:
    """`nima run --nproc N ...`: run `torchrun --nproc-per-node N -m nima <argv>` (argv without
    --nproc) and return its exit code."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc-per-node={nproc}", "-m", "nima", *argv]  # fmt: skip
    return subprocess.run(command).returncode
