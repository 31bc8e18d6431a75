"""Every hook NIMA calls. A plugin package implements any of them with `@nima.hookimpl`."""

from __future__ import annotations

from typing import Any

import pluggy

hookspec = pluggy.HookspecMarker("nima")
hookimpl = pluggy.HookimplMarker("nima")


@hookspec
def nima_register(registry: Any) -> None:
    """Register this package's plugins: `registry.attention("name", Factory, capabilities=...)`."""


@hookspec
def nima_train_start(run: Any) -> None:
    """A training run starts; `run` holds the config, run directory, model, total steps and
    start_step (where a resumed run goes on from). An implementation that raises in any
    trainer event is reported once and gets no more events."""


@hookspec
def nima_train_step(run: Any, step: int, metrics: dict[str, float]) -> None:
    """Every train.log_interval optimizer steps; `metrics` holds train_loss, lr, grad_norm,
    tokens_per_s, flops_per_s, tokens, loss_spikes (and skipped-step counts where they apply)."""


@hookspec
def nima_evaluate(run: Any, step: int, metrics: dict[str, float]) -> None:
    """A periodic evaluation finished; `metrics` holds val_loss."""


@hookspec
def nima_train_end(run: Any, summary: dict[str, Any]) -> None:
    """Training ended; `summary` holds steps, best_step, wall_s, interrupted, and when not interrupted final_val_loss and sample."""
