"""Conformance checks for optimizer and scheduler plugins, on a toy least-squares problem.

optimizer: `factory(model)` with its defaults; the loss of a small linear regression falls by 10% or more, and
a state_dict loaded into a fresh optimizer continues exactly as the original.
scheduler: `factory(optimizer, total_steps, warmup_steps=)`; the learning rate starts at or
below the peak (below it with a warmup), reaches the peak at the end of the warmup, never
exceeds it, and ends finite, at or below the peak.
"""

from __future__ import annotations

import copy
import inspect
import math
from typing import Any

import torch
from torch import nn

STEPS, TOTAL, WARMUP = 200, 100, 10


def toy_problem(seed: int = 0) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A linear model (2-D weights, as Muon needs) and a noiseless linear target."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(64, 16, generator=g)
    y = x @ torch.randn(16, 8, generator=g)  # (64, 8)
    model = nn.Sequential(nn.Linear(16, 32), nn.Linear(32, 8))
    return model, x, y


def _step(model: nn.Module, optimizer: Any, x: torch.Tensor, y: torch.Tensor) -> float:
    optimizer.zero_grad(set_to_none=True)
    loss = (model(x) - y).square().mean()
    loss.backward()
    optimizer.step()
    return loss.item()


def check_loss_falls(factory: Any, steps: int = STEPS) -> dict[str, float]:
    """The toy problem's loss after `steps` steps with the factory's default settings (tuned
    for language models, so small learning rates) is at most 90% of the first one."""
    torch.manual_seed(0)
    model, x, y = toy_problem()
    optimizer = factory(model)
    losses = [_step(model, optimizer, x, y) for _ in range(steps)]
    assert all(math.isfinite(v) for v in losses), f"a non-finite loss: {losses[-5:]}"
    assert losses[-1] <= 0.9 * losses[0], (
        f"the loss went from {losses[0]:.4g} to {losses[-1]:.4g} in {steps} steps (want <= 90%)"
    )
    return {"first": losses[0], "last": losses[-1]}


def check_state_dict(factory: Any) -> None:
    """A fresh optimizer that loads a state_dict after 5 steps takes the same next 3 steps."""
    torch.manual_seed(0)
    model, x, y = toy_problem()
    optimizer = factory(model)
    for _ in range(5):
        _step(model, optimizer, x, y)
    twin = copy.deepcopy(model)
    resumed = factory(twin)
    resumed.load_state_dict(copy.deepcopy(optimizer.state_dict()))
    for _ in range(3):
        _step(model, optimizer, x, y)
        _step(twin, resumed, x, y)
    for (name, a), b in zip(model.named_parameters(), twin.parameters(), strict=True):
        diff = (a - b).abs().max().item()
        assert diff == 0, f"after load_state_dict, parameter {name} differs by {diff:.3g}"


def lr_curve(factory: Any, total: int = TOTAL, warmup: int = WARMUP) -> tuple[list[float], int]:
    """The learning rate at each step 0..total-1 (peak lr 1.0), and the warmup used (0 for a
    scheduler that takes none)."""
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    takes_warmup = "warmup_steps" in inspect.signature(factory).parameters
    scheduler = (
        factory(optimizer, total, warmup_steps=warmup)
        if takes_warmup
        else factory(optimizer, total)
    )
    lrs = []
    for _ in range(total):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs, warmup if takes_warmup else 0


def check_schedule(factory: Any) -> dict[str, float]:
    """lr at the start, at the end of the warmup and at the end, against a peak of 1.0."""
    lrs, warmup = lr_curve(factory)
    assert all(math.isfinite(v) and v >= 0 for v in lrs), "a negative or non-finite lr"
    assert max(lrs) <= 1.0 + 1e-9, f"the lr rises to {max(lrs):.4g}, above the peak 1.0"
    start, end = lrs[0], lrs[-1]
    if warmup:
        assert start < 1.0, f"with warmup_steps={warmup} the first lr is {start:.4g}, not below 1"
        peak = lrs[warmup]
        assert abs(peak - 1.0) < 1e-6, (
            f"the lr at the end of the warmup (step {warmup}) is {peak:.4g}, not the peak 1.0"
        )
        assert all(
            b >= a - 1e-12 for a, b in zip(lrs[:warmup], lrs[1 : warmup + 1], strict=True)
        ), "the lr falls during the warmup"
    return {"start": start, "end_of_warmup": lrs[warmup], "end": end}


def optimizer_checks(entry, device: str) -> list:
    from nima.testing.kit import Check, maker

    return [
        Check("optimizer", entry.name, "loss_falls", "a toy problem's loss falls", True,
              lambda: check_loss_falls(maker(entry))),
        Check("optimizer", entry.name, "state_dict", "state_dict round-trips exactly", True,
              lambda: check_state_dict(maker(entry))),
    ]  # fmt: skip


def scheduler_checks(entry, device: str) -> list:
    from nima.testing.kit import Check, maker

    return [
        Check("scheduler", entry.name, "schedule",
              "lr at the start, at the end of warmup and at the end", True,
              lambda: check_schedule(maker(entry))),
    ]  # fmt: skip
