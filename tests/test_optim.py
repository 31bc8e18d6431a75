"""Optimizer and scheduler plugins: decay groups, warmup and cosine shape."""

from __future__ import annotations

import math

import torch

import nima


def tiny_model() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.LayerNorm(8), torch.nn.Linear(8, 2))


def test_adamw_decays_matrices_only() -> None:
    model = tiny_model()
    optimizer = nima.get("optimizer", "adamw")(model, lr=1e-3)
    decay, no_decay = optimizer.param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.dim() == 2 for p in decay["params"]) and len(decay["params"]) == 2
    assert all(p.dim() == 1 for p in no_decay["params"]) and len(no_decay["params"]) == 4
    assert decay["betas"] == (0.9, 0.95)


def test_every_optimizer_reduces_a_quadratic() -> None:
    for name in ("adamw", "adam", "sgd"):
        torch.manual_seed(0)
        model = tiny_model()
        x, y = torch.randn(64, 4), torch.randn(64, 2)
        optimizer = nima.get("optimizer", name)(model, lr=1e-2)
        losses = []
        for _ in range(30):
            loss = torch.nn.functional.mse_loss(model(x), y)
            losses.append(loss.item())
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        assert losses[-1] < losses[0] * 0.8, (name, losses[0], losses[-1])


def lrs(scheduler_name: str, steps: int, **options) -> list[float]:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = nima.get("scheduler", scheduler_name)(optimizer, steps, **options)
    out = []
    for _ in range(steps):
        out.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return out


def test_cosine_warms_up_then_decays_to_the_minimum() -> None:
    values = lrs("cosine", 110, warmup_steps=10, min_lr_ratio=0.1)
    assert values[:10] == [(i + 1) / 10 for i in range(10)]
    assert values[10] == 1.0
    mid = 10 + 50  # half-way through the decay
    assert math.isclose(values[mid], 0.1 + 0.9 * 0.5, rel_tol=1e-9)
    assert all(a >= b for a, b in zip(values[10:], values[11:], strict=False))
    assert math.isclose(values[-1], 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 99 / 100)))


def test_constant_with_warmup() -> None:
    assert lrs("constant", 6, warmup_steps=3) == [1 / 3, 2 / 3, 1.0, 1.0, 1.0, 1.0]
