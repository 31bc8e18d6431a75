"""The sampler chain (contract v2) and seeded per-row sampling.

A chain applies its processors in order, `logits = p(ids, logits)`, then selects: with the last
sampler's `select(logits, rng)` if it has one (greedy), else by sampling from the softmax with
`rng`. `ids` (B, N) are each row's tokens so far, prompt included, -1 at left padding.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import torch

from nima.errors import ConfigError


def token_counts(ids: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """How often each token occurs in each row of ids (B, N), -1 (padding) not counted -> (B, V)."""
    counts = torch.zeros(ids.size(0), vocab_size + 1, dtype=torch.long, device=ids.device)
    counts.scatter_add_(1, ids + 1, torch.ones_like(ids))  # column 0 collects the padding
    return counts[:, 1:]


class RowRandom:
    """One seeded generator per row, so a row's draws do not depend on the rest of the batch:
    row i of a batch sampled with `seeds[i]` equals that prompt sampled alone with that seed."""

    def __init__(self, seeds: Sequence[int], device: torch.device | str = "cpu") -> None:
        self.generators = [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]

    def sample(self, logits: torch.Tensor) -> torch.Tensor:
        """A token per row drawn from softmax(logits) (B, V) -> (B,), by the exponential race:
        argmax(p / E) with E ~ Exp(1) draws a token with probability p."""
        probs = logits.float().softmax(dim=-1)  # -inf logits: probability 0, never drawn
        noise = torch.stack(
            [
                torch.empty(logits.size(-1), device=logits.device).exponential_(generator=g)
                for g in self.generators
            ]
        )  # (B, V); fmt: skip
        return (probs / noise).argmax(dim=-1)


def _takes_ids(processor: Any) -> bool:
    """Whether processor is called (ids, logits) (contract v2) rather than (logits) (v1): v2
    when it needs two positional arguments (no default), or takes *args; a first positional
    argument alone, the others defaulted (`(logits, scale=2.0)`), is v1."""
    try:
        params = inspect.signature(processor).parameters.values()
    except (TypeError, ValueError):  # no signature to read (a builtin): assume v2
        return True
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    required = [p for p in positional if p.default is p.empty]
    if any(p.kind == p.VAR_POSITIONAL for p in params):
        return len(required) != 1  # (logits, *rest) is v1; (*args) and (ids, logits, *r) v2
    return len(required) >= 2 or (not required and len(positional) >= 2)


def _contract_v2(processor: Any) -> Any:
    """A processor written for the first contract, `(logits) -> logits`, still works."""
    return processor if _takes_ids(processor) else (lambda ids, logits: processor(logits))


class SamplerChain:
    """Processors in order, then a selector: the last sampler's `select`, else sampling."""

    def __init__(self, samplers: Sequence[Any] = ()) -> None:
        samplers = list(samplers)
        selectors = [i for i, s in enumerate(samplers) if hasattr(s, "select")]
        if selectors and selectors != [len(samplers) - 1]:
            raise ConfigError(
                "a selector sampler (greedy or sample) must come last in the chain and only "
                f"once; got {[type(s).__name__ for s in samplers]}"
            )
        for s in samplers:
            if isinstance(s, type) or not callable(s):
                raise ConfigError(
                    f"a sampler must be an instance called as sampler(ids, logits), got {s!r} "
                    f"(in gin write @sampler.top_k(), with the parentheses)."
                )
        processors = samplers[:-1] if selectors else samplers
        self.processors = [_contract_v2(p) for p in processors]
        self.selector = samplers[-1] if selectors else None

    def process(self, ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """logits (B, V) through every processor, in float32."""
        logits = logits.float()
        for processor in self.processors:
            logits = processor(ids, logits)
        return logits

    def select(self, logits: torch.Tensor, rng: RowRandom | None) -> torch.Tensor:
        """Processed logits (B, V) -> next ids (B,)."""
        if self.selector is not None:
            return self.selector.select(logits, rng)
        if rng is None:
            raise ConfigError("sampling needs a seed (RowRandom); or end the chain with greedy")
        return rng.sample(logits)

    def __call__(
        self, ids: torch.Tensor, logits: torch.Tensor, rng: RowRandom | None = None
    ) -> torch.Tensor:
        """ids (B, N), logits (B, V) -> next token ids (B,)."""
        return self.select(self.process(ids, logits), rng)
