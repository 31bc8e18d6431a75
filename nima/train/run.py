"""`nima run`: gin file -> plugins -> data -> model -> training -> run directory -> sample."""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import gin
import torch

from nima import atomic, config
from nima.capabilities import check_trusted
from nima.data.tokens import PreparedData, prepare_tokens
from nima.errors import ConfigError, RunDirError
from nima.generate import encode_prompt, sample_text
from nima.hooks import PluginSystem
from nima.runs import (
    claim,
    claim_default,
    configured_settings,
    environment,
    load_checkpoint,
    pick_device,
    reclaim,
    release,
    seed_everything,
)
from nima.train import objectives
from nima.train.distributed import World, join, leave
from nima.train.metrics import MetricsFile, truncate_metrics
from nima.train.progress import ProgressDisplay
from nima.train.settings import TrainSettings
from nima.train.trainer import Trainer, check_model_plugins, emit, resolve_precision


def run_experiment(
    config_files: Sequence[str | Path],
    bindings: Sequence[str],
    system: PluginSystem,
    run_dir: Path | None = None,
    device_name: str | None = None,
    show_progress: bool = True,
    resume: Path | None = None,
) -> dict[str, Any]:
    """Train as the gin config says; everything the run produces goes into the run directory.

    Ctrl-C stops training at a step boundary: `last` is saved and the summary says
    `interrupted`, with no final evaluation or sample (the caller reports it, exit code 130).
    `resume` is a run directory to go on with: its config.gin (plus `bindings`, e.g. more
    steps) and its `last` checkpoint's weights and training state; on the CPU the run then
    continues bit for bit as if it had never stopped.
    """
    if resume is not None:
        if config_files:
            raise ConfigError(
                f"--resume {resume} continues that run from its own config.gin; give no gin "
                f"files with it (change a setting with --bind, e.g. --bind 'train.steps = N')."
            )
        if not (Path(resume) / "config.gin").is_file():
            raise RunDirError(
                f"--resume {resume}: no config.gin there, so it is not a run directory; give "
                f"the folder a `nima run` wrote."
            )
        config_files = [Path(resume) / "config.gin"]
    config.parse(config_files, bindings, system)
    settings = configured_settings()
    world, device = join(pick_device(device_name))  # one process, or a rank of torchrun's
    try:
        summary = _train(config_files, bindings, system, settings, world, device, run_dir,
                         show_progress, resume)  # fmt: skip
        world.barrier()  # every rank leaves the group together (a gloo rank leaving early aborted)
        return summary
    finally:
        leave()


def _train(
    config_files: Sequence[str | Path],
    bindings: Sequence[str],
    system: PluginSystem,
    settings: TrainSettings,
    world: World,
    device: torch.device,
    run_dir: Path | None,
    show_progress: bool,
    resume: Path | None,
) -> dict[str, Any]:
    seed_everything(settings.seed)  # the same on every rank: one model, one batch order
    if settings.threads:
        torch.set_num_threads(settings.threads)

    if not world.main:
        world.barrier()  # rank 0 builds the token cache first; the others then read it
    prepared = prepare_tokens(settings.dataset, settings.tokenizer)
    if world.main:
        world.barrier()
    tokenizer = prepared.tokenizer
    settings = replace(settings, precision=resolve_precision(settings.precision, device))
    with config.building():  # the model, optimizer and scheduler factories run here
        model = settings.model(vocab_size=tokenizer.vocab_size).to(device)
        check_model_plugins(model, system, device, settings.precision)  # before any write
        used = [("tokenizer", tokenizer), ("dataset", settings.dataset),
                ("optimizer", settings.optimizer), ("scheduler", settings.scheduler),
                *(("sampler", s) for s in settings.samplers)]  # fmt: skip
        check_trusted(system.registries, used, device.type)  # what `nima check` found failing
        if settings.init_from and resume is None:  # fine-tuning: start from those weights
            load_checkpoint(model, starting_checkpoint(settings.init_from))
        encode_prompt(tokenizer, settings.sample_prompt)  # not only after training
        meta = {"vocab_size": tokenizer.vocab_size, "data": prepared.metadata}
        splits = objectives.or_default(settings.objective).prepare(prepared, settings.dataset)
        trainer = Trainer(settings, model, splits, device, system, meta, world)
    run_dir = _take_run_dir(world, run_dir, resume, config_files)  # nothing failed
    try:  # the run directory is this process's until it returns
        return _run_in(
            run_dir, trainer, prepared, system, config_files, bindings, show_progress, resume
        )
    finally:
        release(run_dir)


def starting_checkpoint(init_from: str) -> Path:
    """train.init_from's checkpoint: a .safetensors file, or a run directory's best one."""
    path = Path(init_from)
    if path.is_dir():
        path = path / "checkpoints" / "best.safetensors"
    if not path.is_file():
        raise ConfigError(
            f"train.init_from = {init_from!r}: {path} does not exist. Give a run directory "
            f"(its checkpoints/best.safetensors is loaded) or a .safetensors checkpoint."
        )
    return path


def _take_run_dir(
    world: World, run_dir: Path | None, resume: Path | None, config_files: Sequence[str | Path]
) -> Path:
    """Rank 0 claims the run directory (or takes over the one to resume) and tells the others."""
    if not world.main:
        taken = world.broadcast(None)
        if taken is None:
            raise RunDirError("rank 0 could not take the run directory; its error says why.")
        return Path(taken)
    try:
        if resume is not None:
            run_dir = reclaim(resume)
        else:
            run_dir = claim(run_dir) if run_dir else claim_default(config_files[0])
    except BaseException:
        world.broadcast(None)
        raise
    return Path(world.broadcast(str(run_dir)))


def _run_in(
    run_dir: Path,
    trainer: Trainer,
    prepared: PreparedData,
    system: PluginSystem,
    config_files: Sequence[str | Path],
    bindings: Sequence[str],
    show_progress: bool,
    resume: Path | None,
) -> dict[str, Any]:
    """Write the run's files (or go on with the run's own), train, evaluate and sample; only
    rank 0 writes, reports, evaluates at the end and samples."""
    main = trainer.world.main
    if resume is not None:
        _resume(run_dir, trainer, list(bindings))
    elif main:
        prepared.tokenizer.save(run_dir / "tokenizer.json")
        atomic.write_json(
            run_dir / "run.json",
            {
                "config_files": [str(f) for f in config_files],
                "bindings": list(bindings),
                "seed": trainer.s.seed,
                "device": str(trainer.device),
                "precision": trainer.s.precision,  # train.precision = 'auto' resolved
                "data": prepared.metadata,
                "parameters": sum(p.numel() for p in trainer.model.parameters()),
                "non_embedding_parameters": trainer.model.num_parameters(),
                "plugin_packages": system.packages,
                **environment(),
            },
        )
    if main:
        atomic.write_text(run_dir / "config.gin", gin.operative_config_str())

    listeners = _loggers(trainer.s.loggers, show_progress) if main else []
    display = next((x for x in listeners if isinstance(x, ProgressDisplay)), None)
    for listener in listeners:
        system.pm.register(listener)
    try:
        summary = trainer.fit(run_dir)
        if not main:
            return {**summary, "rank": trainer.world.rank}
        if not summary["interrupted"]:
            try:
                if trainer.sharded:  # rank 0 alone goes on: an unsharded model of its own
                    trainer.model = _unsharded_model(trainer, prepared)
                summary.update(_evaluate_and_sample(trainer, prepared, display))
            except KeyboardInterrupt:  # the training itself is complete and saved
                summary["interrupted"] = True
        emit(system, "nima_train_end", run=trainer.run, summary=summary)
    finally:  # also when training raises: close the file, give the terminal back
        for listener in listeners:
            if system.pm.is_registered(listener):  # not dropped for raising
                system.pm.unregister(listener)
            with contextlib.suppress(Exception):  # one that failed may fail to close, too
                listener.close()
    summary["run_dir"] = str(run_dir)
    atomic.write_json(run_dir / "summary.json", summary)
    return summary


def _unsharded_model(trainer: Trainer, prepared: PreparedData) -> torch.nn.Module:
    """A plain (unsharded) copy of the model for rank 0's final evaluation and sample under
    FSDP: built by the same factory; the best checkpoint's full weights are loaded into it."""
    with config.building():
        model = trainer.s.model(vocab_size=prepared.tokenizer.vocab_size)
    return model.to(trainer.device)


def _loggers(chosen: Sequence[Any] | None, show_progress: bool) -> list[Any]:
    """The run's loggers: train.loggers (default: progress), always metrics.jsonl, and no
    progress display under --no-progress."""
    loggers = [ProgressDisplay()] if chosen is None else list(chosen)
    if not any(isinstance(x, MetricsFile) for x in loggers):
        loggers.insert(0, MetricsFile())
    return [x for x in loggers if show_progress or not isinstance(x, ProgressDisplay)]


def _resume(run_dir: Path, trainer: Trainer, bindings: list[str]) -> None:
    """Go on with a stopped run: its `last` weights and training state go into `trainer`,
    metrics.jsonl loses the records after that step, run.json records the resume."""
    step = trainer.resume_from(run_dir / "checkpoints" / "last.safetensors")
    if step >= trainer.s.steps:
        raise ConfigError(
            f"Run {run_dir} has trained {step} steps and train.steps is {trainer.s.steps}: "
            f"nothing to resume. Give it more steps, e.g. --bind 'train.steps = {2 * step}'."
        )
    if not trainer.world.main:
        return
    truncate_metrics(run_dir, step)
    info = json.loads((run_dir / "run.json").read_text())
    info.setdefault("resumes", []).append({"step": step, "bindings": bindings, **environment()})
    atomic.write_json(run_dir / "run.json", info)


def _evaluate_and_sample(
    trainer: Trainer, prepared: PreparedData, display: ProgressDisplay | None
) -> dict[str, Any]:
    """The best checkpoint's loss, perplexity and bits per character on the validation split
    and, where the dataset has one, the test split; and a sample from the trained model."""
    s, track = trainer.s, display.track if display else None
    results: dict[str, Any] = {"final_eval": s.final_eval}
    objective = trainer.objective
    for split, prefix in (("val", "final_val"), ("test", "test")):
        if split not in prepared.splits:  # a test split only where the dataset has one
            continue
        measured = trainer.final_evaluation(track, split)
        loss = measured.pop("loss")
        results[f"{prefix}_loss"] = loss
        results[f"{prefix}_perplexity"] = math.exp(loss) if loss < 700 else math.inf
        results.update({f"{prefix}_{name}": value for name, value in measured.items()})
        # exact only when every token of the split was scored once
        if s.final_eval == "full" and objective.scores_every_token:
            results[f"{split}_bits_per_char"] = prepared.bits_per_char(loss, split)
    if hasattr(objective, "report"):  # e.g. seq2seq: exact match and chrF of decoded answers
        results.update(objective.report(trainer.model, prepared.tokenizer, trainer.splits))
    if hasattr(objective, "sample"):  # what this objective's model makes of the prompt
        results["sample"] = objective.sample(
            trainer.model, prepared.tokenizer, s.sample_prompt, device=trainer.device
        )
        return results
    results["sample"] = sample_text(
        trainer.model,
        prepared.tokenizer,
        s.sample_prompt,
        s.sample_tokens,
        s.samplers,
        s.seed,
    )
    return results


def interrupted_message(summary: dict[str, Any]) -> str:
    """What a Ctrl-C'd run left behind and how to go on from it (printed by `nima run`)."""
    run_dir, step, best_step = summary["run_dir"], summary["steps"], summary["best_step"]
    best = (
        f"checkpoints/best.safetensors holds step {best_step}, the best evaluated"
        if best_step is not None
        else "no evaluation had run, so there is no best checkpoint"
    )
    return (
        f"interrupted at step {step}: {run_dir}/checkpoints/last.safetensors holds step {step}; "
        f"{best}. Go on with `nima run --resume {run_dir}`, or sample it with "
        f"`nima generate {run_dir} --checkpoint last`."
    )
