"""A finished run as a LanguageModel: `nima.runs.load_run` rebuilds its model from config.gin
and fills it from a checkpoint (best by default). Imports nothing of the trainer."""

from __future__ import annotations

from pathlib import Path

from nima.generate.api import LanguageModel
from nima.generate.seq2seq import language_model
from nima.hooks import PluginSystem
from nima.runs import load_run, pick_device


def load(
    run_dir: str | Path,
    checkpoint: str = "best",
    device: str | None = None,
    system: PluginSystem | None = None,
) -> LanguageModel:
    """A finished run's model (its `checkpoint`: best or last) and tokenizer, in eval mode."""
    if system is None:
        from nima.hooks import system as default_system

        system = default_system()
    loaded = load_run(run_dir, system, pick_device(device), checkpoint)
    return language_model(loaded.model, loaded.tokenizer)  # Seq2Seq: EncoderDecoderLM
