"""Reading a run's config and a finished run: settings, tokenizer and model with a checkpoint."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gin
import torch

from nima import config
from nima.errors import ConfigError, RunDirError
from nima.hooks import PluginSystem
from nima.runs.checkpoint import load_checkpoint
from nima.train.settings import TrainSettings  # the `train` configurable a config.gin sets

TRAINING_NEEDS = ("model", "dataset", "tokenizer", "optimizer", "scheduler")


def configured_settings(needs: tuple[str, ...] = TRAINING_NEEDS) -> TrainSettings:
    """The `train` configurable as the parsed gin config sets it; `needs` must all be set."""
    with config.building():  # instances such as @dataset.x() are built here
        settings = gin.get_configurable(TrainSettings)()
    if missing := settings.missing(needs):
        raise ConfigError(
            f"The config does not set {', '.join(f'train.{m}' for m in missing)}; "
            f"see experiments/gpt.gin for a complete experiment."
        )
    return settings


@dataclass
class LoadedRun:
    """A finished run rebuilt from its directory, the model in eval mode."""

    run_dir: Path
    settings: TrainSettings
    tokenizer: Any
    model: torch.nn.Module
    checkpoint: dict[str, Any]  # the loaded checkpoint's metadata (step, val_loss, ...)


def load_run(
    run_dir: str | Path, system: PluginSystem, device: torch.device, checkpoint: str = "best"
) -> LoadedRun:
    """Rebuild the run's model from its config.gin and fill it from checkpoints/<checkpoint>."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        what = "is a file, not a folder" if run_dir.exists() else "does not exist"
        raise RunDirError(f"Run directory {run_dir} {what}; give the folder `nima run` wrote.")
    for needed in ("config.gin", "tokenizer.json"):
        if not (run_dir / needed).is_file():
            raise RunDirError(
                f"{run_dir} is not a run directory: {needed} is missing (a run writes "
                f"config.gin, tokenizer.json and checkpoints/ before it trains)."
            )
    path = run_dir / "checkpoints" / f"{checkpoint}.safetensors"
    if not path.is_file():
        have = sorted(p.stem for p in (run_dir / "checkpoints").glob("*.safetensors"))
        raise RunDirError(
            f"{run_dir} has no {checkpoint!r} checkpoint ({path} is missing); it has "
            f"{', '.join(map(repr, have)) or 'none'}. A run writes 'best' and 'last' at each "
            f"evaluation, and 'last' when it is interrupted."
        )
    config.parse([run_dir / "config.gin"], [], system)
    settings = configured_settings(needs=("model", "tokenizer"))
    tokenizer = type(settings.tokenizer).load(run_dir / "tokenizer.json")
    with config.building():
        model = settings.model(vocab_size=tokenizer.vocab_size).to(device)
    _check_trusted(model, tokenizer, system, device)
    metadata = load_checkpoint(model, path)
    model.eval()
    return LoadedRun(run_dir, settings, tokenizer, model, metadata)


def _check_trusted(model: torch.nn.Module, tokenizer: Any, system: PluginSystem, device) -> None:
    """Refuse a run whose model plugins or tokenizer `nima check` found failing here."""
    from nima.capabilities import check_model, check_trusted

    dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
    if callable(getattr(model, "plugins", None)):
        check_model(
            model, system.registries, device=device.type, dtype=dtype, training=False,
            verdicts_only=True,
        )  # fmt: skip
    check_trusted(system.registries, [("tokenizer", tokenizer)], device.type)
