"""Optimizer and scheduler factories: `factory(model, ...)` and `factory(optimizer, total_steps, ...)`."""

from __future__ import annotations

import math
from typing import Annotated

import torch
from torch import nn

from nima.validation import Range

LearningRate = Annotated[float, Range(gt=0)]
Beta = Annotated[float, Range(ge=0, lt=1)]
NonNegative = Annotated[float, Range(ge=0)]
Steps = Annotated[int, Range(ge=0)]


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Decay matrices (linear and embedding weights) only; biases and norm gains stay undecayed."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def _fused_kwargs(model: nn.Module) -> dict:
    """torch's fused Adam(W) kernels exist for CUDA (and CPU in recent versions)."""
    device = next(model.parameters()).device.type
    return {"fused": True} if device in ("cuda", "cpu") else {}


def adamw(
    model: nn.Module,
    lr: LearningRate = 1e-3,
    betas: tuple[Beta, Beta] = (0.9, 0.95),
    weight_decay: NonNegative = 0.1,
    eps: NonNegative = 1e-8,
) -> torch.optim.Optimizer:
    """AdamW, weight decay on matrices only, fused where torch offers it."""
    groups = _param_groups(model, weight_decay)
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, **_fused_kwargs(model))


def adam(
    model: nn.Module,
    lr: LearningRate = 1e-3,
    betas: tuple[Beta, Beta] = (0.9, 0.999),
    eps: NonNegative = 1e-8,
) -> torch.optim.Optimizer:
    """Adam without weight decay."""
    return torch.optim.Adam(model.parameters(), lr=lr, betas=betas, eps=eps, **_fused_kwargs(model))


def sgd(
    model: nn.Module,
    lr: LearningRate = 0.1,
    momentum: Beta = 0.9,
    weight_decay: NonNegative = 0.0,
) -> torch.optim.Optimizer:
    """SGD with momentum; weight decay on matrices only."""
    groups = _param_groups(model, weight_decay)
    return torch.optim.SGD(groups, lr=lr, momentum=momentum)


def cosine(
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    warmup_steps: Steps = 100,
    min_lr_ratio: Annotated[float, Range(ge=0, le=1)] = 0.1,
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup from 0, then cosine decay to min_lr_ratio * lr at total_steps."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def constant(
    optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: Steps = 0
) -> torch.optim.lr_scheduler.LambdaLR:
    """Constant learning rate after an optional linear warmup."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / warmup_steps) if warmup_steps else 1.0
    )
