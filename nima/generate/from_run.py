"""Sampling from a finished run: its config.gin rebuilds the model, its best checkpoint fills it."""

from __future__ import annotations

from pathlib import Path

from nima import config
from nima.errors import RunDirError
from nima.hooks import PluginSystem
from nima.train import checkpoint


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
) -> str:
    """`prompt` continued from the run's best checkpoint with the chosen sampler plugins."""
    from nima.train.run import configured_settings, pick_device, sample_text

    run_dir = Path(run_dir)
    for needed in ("config.gin", "tokenizer.json", "checkpoints/best.safetensors"):
        if not (run_dir / needed).exists():
            raise RunDirError(f"{run_dir} is not a finished run directory: {needed} is missing.")
    config.parse([run_dir / "config.gin"], [], system)
    settings = configured_settings(needs=("model", "tokenizer"))
    tokenizer = type(settings.tokenizer).load(run_dir / "tokenizer.json")
    device = pick_device(device_name)
    model = settings.model(vocab_size=tokenizer.vocab_size).to(device)
    checkpoint.load(model, run_dir / "checkpoints" / "best")

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
    return sample_text(model, tokenizer, prompt, max_new_tokens, chain, device, seed)
