"""The training loop: random windows of the train split, gradient accumulation, autocast mixed
precision, clipping, periodic eval on fixed batches, best/last checkpoints, and events out as
pluggy hooks."""

from __future__ import annotations

import contextlib
import math
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nima.capabilities import require
from nima.errors import ConfigError, DataError
from nima.hooks import PluginSystem
from nima.runs import load_checkpoint, save_checkpoint
from nima.train.settings import TrainSettings

Batch = tuple[torch.Tensor, torch.Tensor]
Track = Callable[[list[Batch], str], Iterable[Batch]]  # wraps batches in a progress display


@dataclass
class Run:
    """What hooks see of a run."""

    settings: TrainSettings
    run_dir: Path
    device: torch.device
    model: torch.nn.Module
    total_steps: int
    summary: dict[str, Any] = field(default_factory=dict)


PRECISIONS = {"bf16": torch.bfloat16, "fp16": torch.float16}  # autocast dtypes; fp32: none


def compute_dtype(model: torch.nn.Module, precision: str) -> torch.dtype:
    """The dtype the model computes in: autocast's under bf16/fp16, else its parameters'."""
    return PRECISIONS.get(precision, next(model.parameters()).dtype)


def check_model_plugins(
    model: torch.nn.Module, system: PluginSystem, device: torch.device, precision: str = "fp32"
) -> None:
    """Fail before training if the attention or positional plugin lacks what this run needs."""
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError(
            f"train.precision = 'fp16' needs a CUDA device (a GradScaler guards fp16 gradients "
            f"there); this run is on {device.type}. Use 'bf16' or 'fp32' on {device.type}."
        )
    dtype = str(compute_dtype(model, precision)).removeprefix("torch.")
    needs = {
        "attention": dict(backward=True, device=device.type, dtype=dtype, head_dim=model.head_dim),
        "positional": dict(device=device.type),
    }
    for family, need in needs.items():
        registry = system.registries[family]
        entry = registry.find(getattr(model, family, None))
        if entry is not None:
            require(registry, entry, **need)


def _loss(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean loss of the model on one batch: the one place the trainer calls the model."""
    _, loss = model(x, y)
    return loss


class Batches:
    """Random (x, y) windows of one split, from a seeded generator (repeatable on CPU).

    Each optimizer step draws `batch_size x accumulation x world` offsets at once and this
    process takes its `accumulation` micro-batches from its rank's share: the windows of a
    step do not depend on how they are split into micro-batches and processes.
    """

    def __init__(
        self,
        ids: np.ndarray,
        context: int,
        batch_size: int,
        seed: int,
        device,
        accumulation: int = 1,
        world: int = 1,
        rank: int = 0,
    ):
        if len(ids) <= context + 1:
            raise DataError(
                f"A split of {len(ids)} tokens is too short for windows of {context + 1} tokens "
                f"(the model's context_length + 1): use more data or a shorter GPT.context_length."
            )
        self.data = torch.from_numpy(np.asarray(ids, dtype=np.int64))
        self.context, self.batch_size, self.device = context, batch_size, device
        self.accumulation, self.world, self.rank = accumulation, world, rank
        self.generator = torch.Generator().manual_seed(seed)

    def offsets(self, n: int) -> torch.Tensor:
        return torch.randint(len(self.data) - self.context - 1, (n,), generator=self.generator)

    def take(self, offsets: torch.Tensor) -> Batch:
        window = torch.arange(self.context + 1)
        chunk = self.data[offsets[:, None] + window]  # (B, context + 1)
        return chunk[:, :-1].to(self.device), chunk[:, 1:].to(self.device)

    def next(self) -> Batch:
        return self.take(self.offsets(self.batch_size))

    def next_step(self) -> list[Batch]:
        """This process's micro-batches of the next optimizer step."""
        offsets = self.offsets(self.batch_size * self.accumulation * self.world)
        shares = offsets.view(self.world, self.accumulation, self.batch_size)
        return [self.take(micro) for micro in shares[self.rank]]


@torch.no_grad()
def evaluate(model: torch.nn.Module, batches: Iterable[Batch]) -> float:
    """Mean cross-entropy over `batches`, weighted by target count; the model's mode is kept."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    try:
        for x, y in batches:
            loss = _loss(model, x, y)
            total += loss.item() * y.numel()
            count += y.numel()
    finally:
        model.train(was_training)
    return total / count


def full_split_batches(ids: np.ndarray, context: int, batch_size: int, device) -> list[Batch]:
    """The whole split as consecutive windows (every token predicted once), batched."""
    data = torch.from_numpy(np.asarray(ids, dtype=np.int64))
    n = (len(data) - 1) // context
    x = data[: n * context].view(n, context)
    y = data[1 : n * context + 1].view(n, context)
    batches = [(x[i : i + batch_size], y[i : i + batch_size]) for i in range(0, n, batch_size)]
    tail = len(data) - 1 - n * context  # the last partial window
    if tail > 0:
        batches.append((data[n * context : -1][None], data[n * context + 1 :][None]))
    return [(bx.to(device), by.to(device)) for bx, by in batches]


class StopRequest:
    """Ctrl-C (SIGINT) during training: the first asks the loop to stop at the end of the
    current step, so the saved state is a whole step; a second one aborts at once."""

    def __init__(self) -> None:
        self.requested = False

    def _on_sigint(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("\nstopping after this step (Ctrl-C again to abort at once)", file=sys.stderr)

    @contextlib.contextmanager
    def listening(self) -> Iterator[StopRequest]:
        """Catch SIGINT while inside (only the main thread may install a signal handler)."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = signal.signal(signal.SIGINT, self._on_sigint)
        try:
            yield self
        finally:
            signal.signal(signal.SIGINT, previous)


class Trainer:
    """Trains `model` on prepared token splits as `settings` say. Everything that can fail on
    a bad config happens in __init__, before a run directory is claimed for `fit`."""

    def __init__(
        self,
        settings: TrainSettings,
        model,
        splits: dict[str, np.ndarray],
        device: torch.device,
        system: PluginSystem,
        checkpoint_meta: dict,
    ):
        self.s, self.model, self.splits = settings, model, splits
        self.device, self.system = device, system
        self.checkpoint_meta = checkpoint_meta
        self.optimizer = settings.optimizer(model)
        self.scheduler = settings.scheduler(self.optimizer, settings.steps)
        self.scaler = torch.amp.GradScaler(device.type, enabled=settings.precision == "fp16")
        self.skipped_steps = 0  # fp16 steps the GradScaler skipped (inf/NaN gradients)
        context = model.context_length
        self.train_batches = Batches(
            splits["train"],
            context,
            settings.batch_size,
            settings.seed,
            device,
            accumulation=settings.accumulation_steps,
        )
        val = Batches(splits["val"], context, settings.batch_size, settings.seed + 1, device)
        self.eval_set = [val.next() for _ in range(settings.eval_batches)]  # fixed for the run
        self.stop = StopRequest()

    def autocast(self) -> contextlib.AbstractContextManager:
        """Mixed precision for the forward and the loss (not the backward, as torch advises)."""
        dtype = PRECISIONS.get(self.s.precision)
        return torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None)

    def train_step(self, micro_batches: list[Batch]) -> torch.Tensor:
        """One optimizer step over `micro_batches`: gradients accumulate, each micro-batch's loss
        divided by their number, so the step is that of one batch holding them all. Returns
        the mean loss (a tensor: reading it is a host sync, left to the caller)."""
        model, s = self.model, self.s
        total = torch.zeros((), device=self.device)
        for x, y in micro_batches:
            with self.autocast():
                loss = _loss(model, x, y) / len(micro_batches)
            self.scaler.scale(loss).backward()
            total += loss.detach()
        if s.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)  # clip the true gradients, not scaled ones
            torch.nn.utils.clip_grad_norm_(model.parameters(), s.grad_clip)
        if self.scaler.is_enabled():
            scale = self.scaler.get_scale()
            self.scaler.step(self.optimizer)  # skipped when a gradient is inf/NaN
            self.scaler.update()  # ...and then the scale shrinks
            self.skipped_steps += self.scaler.get_scale() < scale
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        return total

    def checkpoint_path(self, name: str) -> Path:
        return self.run.run_dir / "checkpoints" / f"{name}.safetensors"

    def _checkpoint(self, name: str, step: int, val_loss: float | None) -> None:
        meta = {**self.checkpoint_meta, "step": step, "val_loss": val_loss}
        save_checkpoint(self.model, self.checkpoint_path(name), meta)

    def fit(self, run_dir: Path) -> dict[str, Any]:
        """Train until `settings.steps`, or until Ctrl-C: then `last` holds the last whole step.
        Checkpoints go to `run_dir`/checkpoints."""
        s, hook, model = self.s, self.system.hook, self.model
        self.run = Run(s, run_dir, self.device, model, s.steps)
        model.train()
        hook.nima_train_start(run=self.run)
        best, best_step, done, last_saved = math.inf, None, 0, None
        tokens_per_step = s.batch_size * s.accumulation_steps * model.context_length
        start = last_log = time.perf_counter()
        last_log_step = 0  # throughput counts the steps since the clock was last read
        with self.stop.listening():
            for step in range(1, s.steps + 1):
                lr = self.optimizer.param_groups[0]["lr"]
                loss = self.train_step(self.train_batches.next_step())
                done = step
                if step % s.log_interval == 0 or step == s.steps:
                    now = time.perf_counter()
                    metrics = {
                        "train_loss": loss.item(),
                        "lr": lr,
                        "tokens_per_s": tokens_per_step * (step - last_log_step) / (now - last_log),
                    }
                    if self.scaler.is_enabled():
                        metrics["skipped_steps"] = self.skipped_steps
                    last_log, last_log_step = now, step
                    hook.nima_train_step(run=self.run, step=step, metrics=metrics)
                if step % s.eval_interval == 0 or step == s.steps:
                    val_loss = evaluate(model, self.eval_set)
                    if val_loss < best:
                        best, best_step = val_loss, step
                        self._checkpoint("best", step, val_loss)
                    self._checkpoint("last", step, val_loss)
                    last_saved = step
                    hook.nima_evaluate(run=self.run, step=step, metrics={"val_loss": val_loss})
                    # eval time is not training throughput
                    last_log, last_log_step = time.perf_counter(), step
                if self.stop.requested:
                    break
        if self.stop.requested and last_saved != done:
            self._checkpoint("last", done, None)  # not evaluated at this step
        wall = time.perf_counter() - start
        self.run.summary.update(
            steps=done,
            interrupted=self.stop.requested,
            best_step=best_step,  # None: nothing was evaluated, there is no best checkpoint
            best_batches_val_loss=best if best_step is not None else None,  # on the fixed batches
            wall_s=wall,
            tokens_per_s=tokens_per_step * done / wall if wall else 0.0,
        )
        return self.run.summary

    def final_evaluation(self, track: Track | None = None) -> float:
        """Loss of the best checkpoint over the whole validation split (or the fixed batches).
        A run that was not interrupted has one: its last step is always evaluated."""
        load_checkpoint(self.model, self.checkpoint_path("best"))
        if self.s.final_eval == "full":
            batches = full_split_batches(
                self.splits["val"], self.model.context_length, self.s.batch_size * 4, self.device
            )
        else:
            batches = self.eval_set
        return evaluate(self.model, track(batches, "final eval") if track else batches)
