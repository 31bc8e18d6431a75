"""Sampling from a finished run: `nima.runs.load_run` rebuilds its model from config.gin and
fills it from a checkpoint (best by default)."""

from __future__ import annotations

from pathlib import Path

from nima.generate import sample_text
from nima.hooks import PluginSystem
from nima.runs import load_run, pick_device


def generate_from_run(
    run_dir: Path,
    prompt: str,
    max_new_tokens: int,
    system: PluginSystem,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    greedy: bool = False,
    seed: int = 0,
    device_name: str | None = None,
    checkpoint: str = "best",
) -> str:
    """`prompt` continued from the run's `checkpoint` with the chosen sampler plugins."""
    device = pick_device(device_name)
    run = load_run(run_dir, system, device, checkpoint)

    samplers = system.registries["sampler"]
    chain = []
    if temperature != 1.0:
        chain.append(samplers.get("temperature")(temperature))
    if top_k is not None:  # the plugins themselves refuse bad values (top_k 0, top_p 1.5)
        chain.append(samplers.get("top_k")(top_k))
    if top_p is not None:
        chain.append(samplers.get("top_p")(top_p))
    if greedy:
        chain.append(samplers.get("greedy")())
    return sample_text(run.model, run.tokenizer, prompt, max_new_tokens, chain, device, seed)
