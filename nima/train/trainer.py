"""The training loop: random windows of the train split, gradient accumulation, autocast mixed
precision, clipping, periodic eval on fixed batches, best/last checkpoints, and events out as
pluggy hooks."""

from __future__ import annotations

import contextlib
import functools
import math
import platform
import random
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nima.capabilities import check_model
from nima.errors import ConfigError, NimaError
from nima.hooks import PluginSystem
from nima.runs import load_checkpoint, read_training_state, save_checkpoint
from nima.train import distributed, objectives
from nima.train.batches import Batch
from nima.train.distributed import ALONE, World
from nima.train.layer_stats import LayerStats
from nima.train.settings import TrainSettings

Track = Callable[[list[Batch], str], Iterable[Batch]]  # wraps batches in a progress display


@dataclass
class Run:
    """What hooks see of a run."""

    settings: TrainSettings
    run_dir: Path
    device: torch.device
    model: torch.nn.Module
    total_steps: int
    start_step: int = 0  # the step a resumed run goes on from
    summary: dict[str, Any] = field(default_factory=dict)


PRECISIONS = {"bf16": torch.bfloat16, "fp16": torch.float16}  # autocast dtypes; fp32: none


def compute_dtype(model: torch.nn.Module, precision: str) -> torch.dtype:
    """The dtype the model computes in: autocast's under bf16/fp16, else its parameters'."""
    return PRECISIONS.get(precision, next(model.parameters()).dtype)


def check_model_plugins(
    model: torch.nn.Module, system: PluginSystem, device: torch.device, precision: str = "fp32"
) -> None:
    """Fail before training if any plugin of the model lacks what this run needs."""
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError(
            f"train.precision = 'fp16' needs a CUDA device (a GradScaler guards fp16 gradients "
            f"there); this run is on {device.type}. Use 'bf16' or 'fp32' on {device.type}."
        )
    if precision == "bf16" and device.type == "cpu" and cpu_bf16_dot_products() is False:
        print(
            "warning: train.precision = 'bf16' on an x86 CPU without bf16 dot products "
            "(AVX512-BF16 or AMX): autocast emulates them and can be several times slower "
            "than fp32 here (--bind \"train.precision = 'fp32'\", or 'auto').",
            file=sys.stderr,
        )
    dtype = str(compute_dtype(model, precision)).removeprefix("torch.")
    check_model(model, system.registries, device=device.type, dtype=dtype)  # every layer's plugins


def cpu_bf16_dot_products() -> bool | None:
    """Does this CPU compute bf16 dot products natively? On x86 that takes AVX512-BF16 or AMX;
    elsewhere torch cannot tell (None)."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return None
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # private to torch.cpu
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)


def resolve_precision(precision: str, device: torch.device) -> str:
    """train.precision = 'auto': bf16 where the device computes it natively (a CUDA GPU that
    supports it, an x86 CPU with AVX512-BF16 or AMX), else fp32. Other values stay."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        native = torch.cuda.is_bf16_supported()
    else:
        native = device.type == "cpu" and cpu_bf16_dot_products() is True
    return "bf16" if native else "fp32"


class Diverged(NimaError):
    """A loss or gradient became NaN or Inf under train.nonfinite = 'stop'."""


def evaluate(model: torch.nn.Module, batches: Iterable[Batch], objective: Any = None) -> float:
    """The objective's mean loss over `batches`, each weighted by its count of scored targets
    (not its size: padding and unmasked tokens count nothing); the model's mode is kept."""
    return objectives.evaluate_batches(model, batches, objectives.or_default(objective))["loss"]


def emit(system: PluginSystem, event: str, **kwargs: Any) -> None:
    """Send a trainer event to every hook implementation (loggers included). One that raises
    is reported once and dropped for the rest of the process: a logger never stops training."""
    for impl in reversed(getattr(system.pm.hook, event).get_hookimpls()):  # pluggy's order
        try:
            impl.function(**{name: kwargs[name] for name in impl.argnames})
        except Exception as exc:
            print(
                f"warning: {impl.plugin_name} raised {type(exc).__name__}: {exc} in {event}; "
                f"it gets no more events in this run, which goes on.",
                file=sys.stderr,
            )
            system.pm.unregister(impl.plugin)


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
        world: World = ALONE,
    ):
        settings = replace(settings, precision=resolve_precision(settings.precision, device))
        self.s, self.model, self.splits = settings, model, splits  # the objective's prepare()
        self.objective = objectives.or_default(settings.objective)  # builds batches, owns the loss
        self.device, self.system = device, system
        self.checkpoint_meta, self.world = checkpoint_meta, world
        # FSDP2: shard the model in place before the optimizer is built on its parameters
        self.sharded = settings.parallel == "fsdp" and world.size > 1
        if self.sharded:
            self.aliases = distributed.aliases(model)  # checkpoint names, before sharding
            distributed.shard(model)
        self.optimizer = settings.optimizer(model)
        if self.sharded:
            self.parameter_names = distributed.parameter_names(model, self.optimizer)
        self.scheduler = settings.scheduler(self.optimizer, settings.steps)
        self.scaler = torch.amp.GradScaler(device.type, enabled=settings.precision == "fp16")
        self.skipped_steps = 0  # fp16 steps the GradScaler skipped (inf/NaN gradients)
        self.nonfinite_skipped = 0  # steps skipped under train.nonfinite = 'skip'
        self.loss_spikes, self.mean_loss = 0, None  # warned spikes; the loss's running mean
        # model FLOPs per trained token: forward + backward ~ 6 x non-embedding parameters
        # (attention's quadratic term left out, as in Kaplan et al. 2020)
        self.flops_per_token = 6 * model.num_parameters()
        self.layer_stats = LayerStats(model)
        self.layer_metrics: dict[str, float] = {}  # the last layer-stats step's, until logged
        self.step, self.tokens = 0, 0  # optimizer steps done, training tokens seen
        self.best, self.best_step = math.inf, None  # the best val loss on the fixed batches
        context = model.context_length
        self.train_batches = self.objective.batches(
            splits["train"],
            context=context,
            batch_size=settings.batch_size,
            seed=settings.seed,
            device=device,
            accumulation=settings.accumulation_steps,
            world=world.size,
            rank=world.rank,
        )
        val = self.objective.batches(
            splits["val"], context=context, batch_size=settings.batch_size,
            seed=settings.seed + 1, device=device,
        )  # fmt: skip
        self.eval_set = [val.next() for _ in range(settings.eval_batches)]  # fixed for the run
        self.stop = StopRequest()
        # the module training steps call (DDP-wrapped and/or compiled, sharing the model's
        # parameters); evaluation and checkpoints use the model itself
        self.ddp = None
        if world.size > 1 and not self.sharded:
            ids = [device.index] if device.type == "cuda" else None
            self.ddp = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
        self.step_model = self.ddp or model
        if settings.compile:
            self.step_model = torch.compile(self.step_model)

    def autocast(self) -> contextlib.AbstractContextManager:
        """Mixed precision for the forward and the loss (not the backward, as torch advises)."""
        dtype = PRECISIONS.get(self.s.precision)
        return torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None)

    def train_step(self, micro_batches: list[Batch]) -> tuple[float, float]:
        """One optimizer step over `micro_batches`: gradients accumulate, each micro-batch's loss
        divided by their number, so the step is that of one batch holding them all. Returns
        the mean loss and the global gradient norm (before clipping): one host sync a step,
        which the non-finite guard needs before the optimizer may touch the weights."""
        model, s = self.model, self.s
        total = torch.zeros((), device=self.device)
        for i, batch in enumerate(micro_batches):
            # DDP averages gradients over the ranks once, after the last micro-batch
            last = i == len(micro_batches) - 1
            if self.sharded:  # FSDP likewise reduce-scatters once, after the last
                model.set_requires_gradient_sync(last)
            with self.ddp.no_sync() if self.ddp and not last else contextlib.nullcontext():
                with self.autocast():
                    loss = self.objective.loss(self.step_model, batch) / len(micro_batches)
                self.scaler.scale(loss).backward()
            total += loss.detach()
        total = self.world.mean(total)  # the loss over the whole effective batch
        self.scaler.unscale_(self.optimizer)  # the true gradients, not scaled ones (fp16)
        interval = s.layer_stats_interval
        layer_stats = interval and (self.step + 1) % interval == 0  # this step's, every N
        if layer_stats:
            self.layer_metrics = self.layer_stats.before_step()  # before clipping, as grad_norm
        if s.grad_clip > 0:
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), s.grad_clip)
        else:
            norm = torch.nn.utils.get_total_norm(
                [p.grad for p in model.parameters() if p.grad is not None]
            )
        norm = distributed.whole(norm)  # under FSDP a DTensor: the norm over every shard
        loss_value, norm_value = torch.stack([total, norm.float()]).tolist()
        # under fp16 an inf gradient is the GradScaler's to skip (counted in skipped_steps)
        if not math.isfinite(loss_value) or not (
            math.isfinite(norm_value) or self.scaler.is_enabled()
        ):
            self._nonfinite(loss_value)
        elif self.scaler.is_enabled():
            scale = self.scaler.get_scale()
            self.scaler.step(self.optimizer)  # skipped when a gradient is inf/NaN
            self.scaler.update()  # ...and then the scale shrinks
            self.skipped_steps += self.scaler.get_scale() < scale
        else:
            self.optimizer.step()
        if layer_stats:
            self.layer_metrics.update(self.layer_stats.after_step())
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        return loss_value, norm_value

    def measure_compile(self, repeats: int = 3) -> dict[str, float]:
        """torch.compile's warm-up (the first compiled forward and backward) and its speedup
        over eager on one micro-batch: forward and backward only, no optimizer step, RNG
        streams restored, so training goes on exactly as it would have."""
        batch = self.eval_set[0]  # batch_size examples

        def seconds(module: torch.nn.Module, n: int) -> float:
            start = time.perf_counter()
            for _ in range(n):
                with self.autocast():
                    loss = self.objective.loss(module, batch)
                loss.backward()
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            return (time.perf_counter() - start) / n

        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            warmup = seconds(self.step_model, 1)  # compiles forward and backward
            seconds(self.model, 1)  # eager's own first-call costs, not timed
            eager, compiled = seconds(self.model, repeats), seconds(self.step_model, repeats)
        self.optimizer.zero_grad(set_to_none=True)
        return {"compile_warmup_s": warmup, "compile_speedup": eager / compiled}

    def _nonfinite(self, loss: float) -> None:
        """A NaN/Inf loss or gradient, before any weight changed: stop, or skip the step."""
        step = self.step + 1
        if self.s.nonfinite == "skip":
            self.nonfinite_skipped += 1
            if self.world.main:
                print(
                    f"warning: step {step}: non-finite loss or gradient; step skipped",
                    file=sys.stderr,
                )
            return
        first = next(
            (n for n, p in self.model.named_parameters()
             if p.grad is not None and not torch.isfinite(distributed.local(p.grad)).all()),
            None,
        )  # fmt: skip
        where = (
            f"the first non-finite gradient is {first!r}" if first else "every gradient is finite"
        )
        raise Diverged(
            f"Training diverged at step {step}: the loss is {loss} and {where}. The weights "
            f"were not updated; checkpoints/last.safetensors, where an evaluation or "
            f"checkpoint_interval saved one before, holds the last good step saved. "
            f"Lower the learning rate, clip gradients (train.grad_clip), use bf16 rather than "
            f"fp16, or set train.nonfinite = 'skip' to skip such steps."
        )

    def _watch_spikes(self, loss: float) -> None:
        """Warn when the loss jumps above spike_factor x its running mean (an EMA over ~50
        steps, from step 10 on): often the first sign of a too-high learning rate."""
        if not math.isfinite(loss):
            return
        k, mean = self.s.spike_factor, self.mean_loss
        if k and mean is not None and self.step > 10 and loss > k * mean:
            self.loss_spikes += 1
            self.world.main and print(
                f"warning: loss spike at step {self.step}: {loss:.4f} > {k:g} x the running "
                f"mean {mean:.4f}",
                file=sys.stderr,
            )
        self.mean_loss = loss if mean is None else 0.98 * mean + 0.02 * loss

    def _emit(self, event: str, **kwargs: Any) -> None:
        if self.world.main:  # one rank reports: loggers would write everything N times
            emit(self.system, event, **kwargs)

    def checkpoint_path(self, name: str) -> Path:
        return self.run_dir / "checkpoints" / f"{name}.safetensors"

    def training_state(self, optimizer_state: dict[str, Any] | None = None) -> dict[str, Any]:
        """Everything besides the weights that the next step depends on, to resume exactly
        (`optimizer_state`: the full one gathered from a sharded optimizer)."""
        rng = {
            "python": random.getstate(),
            "numpy": np.random.get_state(),
            "torch": torch.get_rng_state(),
            "batches": self.train_batches.generator.get_state(),
        }
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        return {
            "step": self.step,
            "world_size": self.world.size,  # the batch partition: resume with the same
            "tokens": self.tokens,
            "best_val_loss": self.best if self.best_step is not None else None,
            "best_step": self.best_step,
            "skipped_steps": self.skipped_steps,
            "nonfinite_skipped": self.nonfinite_skipped,
            "loss_spikes": self.loss_spikes,
            "mean_loss": self.mean_loss,
            "optimizer": optimizer_state or self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": rng,
        }

    def resume_from(self, path: Path) -> int:
        """Load the weights and training state of the checkpoint at `path`; returns its step."""
        if self.sharded:  # every rank reads the full weights and takes its shard
            shard = functools.partial(distributed.load_full_weights, self.model, names=self.aliases)
            load_checkpoint(self.model, path, shard)
        else:
            load_checkpoint(self.model, path)
        state = read_training_state(path)
        if state["world_size"] != self.world.size:
            raise ConfigError(
                f"{path} was saved by {state['world_size']} training process(es) and this run "
                f"has {self.world.size}: each process's share of a step's windows depends on "
                f"their number, so resume with --nproc {state['world_size']}."
            )
        self.step, self.tokens = state["step"], state["tokens"]
        self.best_step, self.skipped_steps = state["best_step"], state["skipped_steps"]
        self.nonfinite_skipped, self.loss_spikes = state["nonfinite_skipped"], state["loss_spikes"]
        self.mean_loss = state["mean_loss"]
        self.best = state["best_val_loss"] if self.best_step is not None else math.inf
        if self.sharded:
            distributed.load_full_optimizer(
                self.model, self.optimizer, state["optimizer"], self.parameter_names
            )
        else:
            self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])
        rng = state["rng"]
        version, key, gauss = rng["python"]
        random.setstate((version, tuple(key), gauss))
        np.random.set_state(rng["numpy"])
        torch.set_rng_state(rng["torch"])
        self.train_batches.generator.set_state(rng["batches"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        return self.step

    def _checkpoint(self, name: str, val_loss: float | None) -> None:
        weights = optimizer_state = None
        if self.sharded:  # every rank takes part in gathering the full state onto rank 0
            optimizer = self.optimizer if name == "last" else None
            weights, optimizer_state = distributed.gather_full_state(
                self.model, optimizer, self.aliases, self.parameter_names
            )
        if not self.world.main:  # rank 0 alone writes; every rank holds the same weights
            return
        meta = {**self.checkpoint_meta, "step": self.step, "val_loss": val_loss}
        # `best` is for sampling
        state = self.training_state(optimizer_state) if name == "last" else None
        save_checkpoint(self.model, self.checkpoint_path(name), meta, state, weights=weights)

    def start(self, run_dir: Path) -> None:
        """Set the run up (the compile measurement, `nima_train_start`) to train into `run_dir`."""
        s, model = self.s, self.model
        self.run_dir = run_dir
        self.run = Run(s, run_dir, self.device, model, s.steps, start_step=self.step)
        model.train()
        if s.compile:
            self.run.summary.update(self.measure_compile())
            self.world.main and print(
                f"torch.compile: warm-up {self.run.summary['compile_warmup_s']:.1f} s, forward "
                f"and backward {self.run.summary['compile_speedup']:.2f}x eager's speed",
                file=sys.stderr,
            )
        self._emit("nima_train_start", run=self.run)
        # positions a step trains on (the objective counts its batches; causal_lm: windows x
        # context_length); updated every step, as batches of pairs vary in length
        self.tokens_per_step = (
            s.batch_size * s.accumulation_steps * self.world.size * model.context_length
        )
        self.last_log, self.last_log_tokens = time.perf_counter(), self.tokens  # for throughput

    def advance(self) -> None:
        """One training step, logged every log_interval steps: `fit`'s work per step besides
        evaluations and checkpoints (what benchmarks/bench_train.py times)."""
        s = self.s
        lr = self.optimizer.param_groups[0]["lr"]
        micro_batches = self.train_batches.next_step()
        self.tokens_per_step = self.world.size * sum(map(self.objective.tokens, micro_batches))
        loss, grad_norm = self.train_step(micro_batches)
        self.step, self.tokens = self.step + 1, self.tokens + self.tokens_per_step
        self._watch_spikes(loss)
        if self.step % s.log_interval == 0 or self.step == s.steps or self.layer_metrics:
            now = time.perf_counter()
            tokens_per_s = (self.tokens - self.last_log_tokens) / (now - self.last_log)
            metrics = {
                "train_loss": loss,
                "lr": lr,
                "grad_norm": grad_norm,
                "tokens_per_s": tokens_per_s,
                "flops_per_s": tokens_per_s * self.flops_per_token,  # an estimate
                "tokens": self.tokens,
                "loss_spikes": self.loss_spikes,
            }
            if self.scaler.is_enabled():
                metrics["skipped_steps"] = self.skipped_steps
            if s.nonfinite == "skip":
                metrics["nonfinite_skipped"] = self.nonfinite_skipped
            metrics.update(self.layer_metrics)  # on layer_stats_interval steps
            self.layer_metrics = {}
            self.last_log, self.last_log_tokens = now, self.tokens
            self._emit("nima_train_step", run=self.run, step=self.step, metrics=metrics)

    def fit(self, run_dir: Path) -> dict[str, Any]:
        """Train from `self.step` (0, or where `resume_from` left it) until `settings.steps`, or
        until Ctrl-C: then `last` holds the last whole step. Checkpoints go to
        `run_dir`/checkpoints: `best` at an improved evaluation, `last` (with the training
        state) at every evaluation and every `checkpoint_interval` steps."""
        s = self.s
        self.start(run_dir)
        last_saved, first_tokens = self.step, self.tokens
        start = time.perf_counter()
        with self.stop.listening():
            while self.step < s.steps:
                self.advance()
                step = self.step
                if step % s.eval_interval == 0 or step == s.steps:
                    measured = objectives.evaluate_batches(
                        self.model, self.eval_set, self.objective
                    )
                    if self.sharded:  # one value, so every rank gathers the same checkpoints
                        measured = self.world.broadcast(measured)
                    val_loss = measured["loss"]
                    metrics = {f"val_{name}": value for name, value in measured.items()}
                    self._emit("nima_evaluate", run=self.run, step=step, metrics=metrics)
                    if val_loss < self.best:
                        self.best, self.best_step = val_loss, step
                        self._checkpoint("best", val_loss)
                    self._checkpoint("last", val_loss)
                    last_saved = step
                    # eval time is not training throughput
                    self.last_log, self.last_log_tokens = time.perf_counter(), self.tokens
                elif s.checkpoint_interval and step % s.checkpoint_interval == 0:
                    self._checkpoint("last", None)
                    last_saved = step
                # every rank stops at the same step, whichever ranks saw the Ctrl-C
                if self.world.any(self.stop.requested, self.device):
                    self.stop.requested = True
                    break
        if self.stop.requested and last_saved != self.step:
            self._checkpoint("last", None)  # not evaluated at this step
        wall = time.perf_counter() - start
        self.run.summary.update(
            steps=self.step,
            interrupted=self.stop.requested,
            best_step=self.best_step,  # None: nothing was evaluated, there is no best checkpoint
            best_batches_val_loss=self.best if self.best_step is not None else None,
            tokens=self.tokens,
            wall_s=wall,  # of this process: a resumed run counts from its resume
            tokens_per_s=(self.tokens - first_tokens) / wall if wall else 0.0,
        )
        return self.run.summary

    def final_evaluation(self, track: Track | None = None, split: str = "val") -> dict[str, float]:
        """The objective's metrics ("loss" first) for the best checkpoint over the whole `split`
        (train.final_eval = "full"), or over eval_batches fixed batches of it. A run that was
        not interrupted has a best checkpoint: its last step is always evaluated."""
        load_checkpoint(self.model, self.checkpoint_path("best"))
        context, s = self.model.context_length, self.s
        if s.final_eval == "full":
            batches = self.objective.full_split(
                self.splits[split], context=context, batch_size=s.batch_size * 4,
                device=self.device, seed=s.seed + 2,
            )  # fmt: skip
        elif split == "val":
            batches = self.eval_set
        else:
            draw = self.objective.batches(
                self.splits[split], context=context, batch_size=s.batch_size, seed=s.seed + 2,
                device=self.device,
            )  # fmt: skip
            batches = [draw.next() for _ in range(s.eval_batches)]
        name = "final eval" if split == "val" else f"final eval ({split})"
        batches = track(batches, name) if track else batches
        return objectives.evaluate_batches(self.model, batches, self.objective)
