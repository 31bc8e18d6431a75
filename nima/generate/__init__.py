"""Decoding over sampler plugins: processors reshape logits, a selector (or sampling) picks a token."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from nima.errors import ConfigError


class SamplerChain:
    """Apply logits processors in order, then select: the last sampler's `select`, else sample."""

    def __init__(self, samplers: Sequence[Any] = ()) -> None:
        selectors = [i for i, s in enumerate(samplers) if hasattr(s, "select")]
        if selectors and selectors != [len(samplers) - 1]:
            raise ConfigError(
                "a selector sampler (such as greedy) must come last in the chain and only once; "
                f"got {[type(s).__name__ for s in samplers]}"
            )
        self.samplers = list(samplers)

    def __call__(self, logits: torch.Tensor, generator: torch.Generator | None = None):
        """logits (B, V) -> next token ids (B,)."""
        logits = logits.float()
        for sampler in self.samplers:
            logits = sampler(logits)
        if self.samplers and hasattr(self.samplers[-1], "select"):
            return self.samplers[-1].select(logits, generator)
        probs = logits.softmax(dim=-1)
        return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


@torch.no_grad()
def generate(
    model: torch.nn.Module,
    idx: torch.Tensor,
    max_new_tokens: int,
    sampler: SamplerChain,
    generator: torch.Generator | None = None,
    stop_id: int | None = None,
) -> torch.Tensor:
    """Extend idx (B, N) by up to max_new_tokens, re-reading the last context_length tokens each
    step. The model decodes in eval mode (no dropout) and is left in the mode it came in."""
    was_training = model.training
    model.eval()
    try:
        for _ in range(max_new_tokens):
            logits = model(idx[:, -model.context_length :], last_only=True)  # (B, 1, V)
            next_id = sampler(logits[:, -1, :], generator)  # (B,)
            idx = torch.cat([idx, next_id[:, None]], dim=1)
            if stop_id is not None and bool((next_id == stop_id).all()):
                break
    finally:
        model.train(was_training)
    return idx


def encode_prompt(tokenizer: Any, prompt: str) -> list[int]:
    """A generation prompt's ids; an empty one is refused (the model needs one token to start)."""
    ids = tokenizer.encode(prompt)
    if not ids:
        raise ConfigError(
            f"The prompt {prompt!r} encodes to no tokens; give at least one character."
        )
    return ids


def sample_text(
    model: torch.nn.Module,
    tokenizer: Any,
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
