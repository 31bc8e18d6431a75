"""`nima run`: gin file -> plugins -> data -> model -> training -> run directory -> sample."""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gin
import numpy as np
import torch

from nima import config
from nima.data.tokens import prepare_tokens
from nima.errors import ConfigError
from nima.generate import SamplerChain, generate
from nima.hooks import PluginSystem
from nima.train import rundir
from nima.train.metrics import MetricsFile
from nima.train.progress import ProgressDisplay
from nima.train.settings import TrainSettings
from nima.train.trainer import Trainer, check_model_plugins


def pick_device(name: str | None) -> torch.device:
    """--device, else CUDA when present, else the CPU."""
    if name:
        if name.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError(f"--device {name}: CUDA is not available here; use --device cpu.")
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


TRAINING_NEEDS = ("model", "dataset", "tokenizer", "optimizer", "scheduler")


def configured_settings(needs: tuple[str, ...] = TRAINING_NEEDS) -> TrainSettings:
    """The `train` configurable as the parsed gin config sets it; `needs` must all be set."""
    settings = gin.get_configurable("nima.train")()
    if missing := settings.missing(needs):
        raise ConfigError(
            f"The config does not set {', '.join(f'train.{m}' for m in missing)}; "
            f"see experiments/gpt.gin for a complete experiment."
        )
    return settings


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def encode_prompt(tokenizer, prompt: str) -> list[int]:
    """A generation prompt's ids; an empty one is refused (the model needs one token to start)."""
    ids = tokenizer.encode(prompt)
    if not ids:
        raise ConfigError(
            f"The prompt {prompt!r} encodes to no tokens; give at least one character."
        )
    return ids


def sample_text(
    model,
    tokenizer,
    prompt: str,
    n_tokens: int,
    samplers: Sequence[Any],
    device: torch.device,
    seed: int,
) -> str:
    """`prompt` continued by `n_tokens` tokens through the sampler chain."""
    ids = torch.tensor([encode_prompt(tokenizer, prompt)], dtype=torch.long, device=device)
    generator = torch.Generator(device=device).manual_seed(seed)
    out = generate(model, ids, n_tokens, SamplerChain(samplers), generator=generator)
    return tokenizer.decode(out[0].tolist(), skip_special_tokens=True)


def run_experiment(
    config_files: Sequence[str | Path],
    bindings: Sequence[str],
    system: PluginSystem,
    run_dir: Path | None = None,
    device_name: str | None = None,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Train as the gin config says; everything the run produces goes into the run directory."""
    config.parse(config_files, bindings, system)
    settings = configured_settings()
    device = pick_device(device_name)
    seed_everything(settings.seed)
    if settings.threads:
        torch.set_num_threads(settings.threads)

    prepared = prepare_tokens(settings.dataset, settings.tokenizer)
    tokenizer = prepared.tokenizer
    model = settings.model(vocab_size=tokenizer.vocab_size).to(device)
    check_model_plugins(model, system, device)  # fail before anything is written
    encode_prompt(tokenizer, settings.sample_prompt)  # not only after training
    run_dir = rundir.claim(Path(run_dir) if run_dir else rundir.default_run_dir(config_files[0]))
    meta = {"vocab_size": tokenizer.vocab_size, "data": prepared.metadata}
    trainer = Trainer(settings, model, prepared.splits, run_dir, device, system, meta)

    (run_dir / "config.gin").write_text(gin.operative_config_str())
    tokenizer.save(run_dir / "tokenizer.json")
    rundir.write_json(
        run_dir / "run.json",
        {
            "config_files": [str(f) for f in config_files],
            "bindings": list(bindings),
            "seed": settings.seed,
            "device": str(device),
            "data": prepared.metadata,
            "parameters": sum(p.numel() for p in model.parameters()),
            "non_embedding_parameters": model.num_parameters(),
            "plugin_packages": system.packages,
            **rundir.environment(),
        },
    )

    listeners = [MetricsFile(run_dir / "metrics.jsonl")]
    if show_progress:
        listeners.append(ProgressDisplay())
    for listener in listeners:
        system.pm.register(listener)
    try:
        summary = trainer.fit()
        summary["final_val_loss"] = trainer.final_evaluation()
        summary["final_eval"] = settings.final_eval
        if settings.final_eval == "full":  # exact only when every val token was scored
            summary["val_bits_per_char"] = prepared.bits_per_char(summary["final_val_loss"], "val")
        summary["sample"] = sample_text(
            model,
            tokenizer,
            settings.sample_prompt,
            settings.sample_tokens,
            settings.samplers,
            device,
            settings.seed,
        )
        system.hook.nima_train_end(run=trainer.run, summary=summary)
    finally:  # also when training raises: close the file, give the terminal back
        for listener in listeners:
            system.pm.unregister(listener)
            listener.close()
    summary["run_dir"] = str(run_dir)
    rundir.write_json(run_dir / "summary.json", summary)
    return summary
