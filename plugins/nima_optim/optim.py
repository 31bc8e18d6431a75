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


def _embeddings(model: nn.Module) -> set[int]:
    """ids of the embedding tables' parameters (a tied output head shares the token table)."""
    return {id(p) for m in model.modules() if isinstance(m, nn.Embedding) for p in m.parameters()}


def _param_groups(model: nn.Module, weight_decay: float, decay_embeddings: bool = False) -> list[dict]:
    """Decay the weight matrices only: biases, norm gains and (unless `decay_embeddings`) the
    embedding tables stay undecayed, as in nanoGPT/GPT-3 practice."""
    skip = set() if decay_embeddings else _embeddings(model)
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2 and id(p) not in skip]
    no_decay = [p for p in params if p.dim() < 2 or id(p) in skip]
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
    decay_embeddings: bool = False,
) -> torch.optim.Optimizer:
    """AdamW, weight decay on weight matrices only, fused where torch offers it."""
    groups = _param_groups(model, weight_decay, decay_embeddings)
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
    decay_embeddings: bool = False,
) -> torch.optim.Optimizer:
    """SGD with momentum; weight decay on weight matrices only."""
    groups = _param_groups(model, weight_decay, decay_embeddings)
    return torch.optim.SGD(groups, lr=lr, momentum=momentum)


class Lion(torch.optim.Optimizer):
    """Lion (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms"): the sign of an
    interpolation of momentum and gradient; one state tensor per parameter, not two."""

    def __init__(self, params, lr: float, betas: tuple[float, float], weight_decay: float):
        super().__init__(params, dict(lr=lr, betas=betas, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None if closure is None else closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                momentum = self.state[p].setdefault("exp_avg", torch.zeros_like(p))
                update = momentum.lerp(p.grad, 1 - beta1).sign_()
                p.mul_(1 - group["lr"] * group["weight_decay"])  # decoupled, as AdamW
                p.add_(update, alpha=-group["lr"])
                momentum.lerp_(p.grad, 1 - beta2)
        return loss


def lion(
    model: nn.Module,
    lr: LearningRate = 3e-4,
    betas: tuple[Beta, Beta] = (0.9, 0.99),
    weight_decay: NonNegative = 0.1,
    decay_embeddings: bool = False,
) -> torch.optim.Optimizer:
    """Lion: sign updates; wants a 3-10x smaller lr and larger weight decay than AdamW."""
    return Lion(_param_groups(model, weight_decay, decay_embeddings), lr, betas, weight_decay)


def newton_schulz(g: torch.Tensor, steps: int = 5) -> torch.Tensor:
    """An approximately orthogonal matrix near `g`'s polar factor U V^T, by a quintic
    Newton-Schulz iteration whose coefficients (3.4445, -4.7750, 2.0315; Jordan et al. 2024)
    push small singular values up fast: they end in roughly [0.7, 1.2], not exactly 1, which
    works as well for Muon and needs 5 steps instead of many."""
    a, b, c = 3.4445, -4.7750, 2.0315
    x = g.bfloat16() if g.is_cuda else g.float()  # bf16 is stable here on GPUs
    tall = x.size(0) > x.size(1)
    if tall:  # iterate on the smaller Gram matrix
        x = x.T
    x = x / (x.norm() + 1e-7)  # spectral norm <= Frobenius norm <= 1
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return (x.T if tall else x).to(g.dtype)


class Muon(torch.optim.Optimizer):
    """Muon (Jordan et al. 2024) for groups marked `muon`: Nesterov momentum, orthogonalised by
    Newton-Schulz, scaled by sqrt(max(1, rows/cols)); AdamW for the other groups."""

    def __init__(self, groups: list[dict], lr: float, momentum: float, weight_decay: float,
                 adam_lr: float, adam_betas: tuple[float, float], eps: float):  # fmt: skip
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay, adam_lr=adam_lr,
                        adam_betas=adam_betas, eps=eps, muon=False)  # fmt: skip
        super().__init__(groups, defaults)
        for group in self.param_groups:  # schedulers scale `lr`: keep AdamW's as a ratio
            group.setdefault("adam_ratio", adam_lr / lr)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None if closure is None else closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    (self._muon if group["muon"] else self._adamw)(p, group)
        return loss

    def _muon(self, p: torch.Tensor, group: dict) -> None:
        buf = self.state[p].setdefault("momentum_buffer", torch.zeros_like(p))
        buf.lerp_(p.grad, 1 - group["momentum"])
        nesterov = p.grad.lerp(buf, group["momentum"])
        update = newton_schulz(nesterov) * max(1.0, p.size(0) / p.size(1)) ** 0.5
        p.mul_(1 - group["lr"] * group["weight_decay"])
        p.add_(update, alpha=-group["lr"])

    def _adamw(self, p: torch.Tensor, group: dict) -> None:
        state = self.state[p]
        if not state:
            state.update(step=0, exp_avg=torch.zeros_like(p), exp_avg_sq=torch.zeros_like(p))
        state["step"] += 1
        beta1, beta2 = group["adam_betas"]
        lr = group["lr"] * group["adam_ratio"]
        state["exp_avg"].lerp_(p.grad, 1 - beta1)
        state["exp_avg_sq"].mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
        m_hat = state["exp_avg"] / (1 - beta1 ** state["step"])
        v_hat = state["exp_avg_sq"] / (1 - beta2 ** state["step"])
        p.mul_(1 - lr * group["weight_decay"])
        p.addcdiv_(m_hat, v_hat.sqrt_().add_(group["eps"]), value=-lr)


def muon(
    model: nn.Module,
    lr: LearningRate = 0.02,
    momentum: Beta = 0.95,
    weight_decay: NonNegative = 0.0,
    adam_lr: LearningRate = 3e-3,
    adam_betas: tuple[Beta, Beta] = (0.9, 0.95),
    eps: NonNegative = 1e-8,
) -> torch.optim.Optimizer:
    """Muon for the hidden weight matrices, AdamW for embeddings, the output head, norms and
    biases. The head is the linear layer that projects to the vocabulary (`model.vocab_size`
    outputs); weight decay applies to matrices only."""
    vocab = getattr(model, "vocab_size", None)
    skip = _embeddings(model) | {
        id(m.weight) for m in model.modules()
        if isinstance(m, nn.Linear) and m.out_features == vocab
    }  # fmt: skip
    params = [p for p in model.parameters() if p.requires_grad]
    hidden = [p for p in params if p.dim() == 2 and id(p) not in skip]
    matrices = [p for p in params if p.dim() >= 2 and id(p) in skip]
    rest = [p for p in params if p.dim() < 2]
    groups = [
        {"params": hidden, "muon": True},
        {"params": matrices, "muon": False, "weight_decay": 0.0},  # embeddings and head
        {"params": rest, "muon": False, "weight_decay": 0.0},
    ]
    groups = [g for g in groups if g["params"]]
    return Muon(groups, lr, momentum, weight_decay, adam_lr, adam_betas, eps)


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


def linear(
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    warmup_steps: Steps = 100,
    min_lr_ratio: Annotated[float, Range(ge=0, le=1)] = 0.0,
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup from 0, then linear decay to min_lr_ratio * lr at total_steps."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return 1 - (1 - min_lr_ratio) * progress

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def wsd(
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    warmup_steps: Steps = 100,
    decay_fraction: Annotated[float, Range(ge=0, le=1)] = 0.2,
    min_lr_ratio: Annotated[float, Range(ge=0, le=1)] = 0.0,
) -> torch.optim.lr_scheduler.LambdaLR:
    """Warmup-stable-decay: linear warmup, the peak lr held, then a linear decay to
    min_lr_ratio over the last decay_fraction of the steps (so a run can be extended from a
    checkpoint taken before the decay)."""
    decay_steps = round(decay_fraction * total_steps)
    decay_start = total_steps - decay_steps

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if step < decay_start:
            return 1.0
        progress = min(1.0, (step - decay_start) / max(1, decay_steps))
        return 1 - (1 - min_lr_ratio) * progress

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
