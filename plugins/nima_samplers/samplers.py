"""Logits processors (temperature, top-k, top-p) and the greedy selector; compose in any order."""

from __future__ import annotations

import torch

from nima.errors import ConfigError


class Temperature:
    """Divide logits by a temperature (below 1 sharpens, above 1 flattens)."""

    def __init__(self, temperature: float = 1.0) -> None:
        if temperature <= 0:
            raise ConfigError(f"temperature must be > 0, got {temperature} (use greedy for argmax)")
        self.temperature = temperature

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:  # (B, V) -> (B, V)
        return logits / self.temperature


class TopK:
    """Keep the k largest logits of each row; the rest become -inf."""

    def __init__(self, k: int = 50) -> None:
        if k < 1:
            raise ConfigError(f"top_k needs k >= 1, got {k}")
        self.k = k

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        k = min(self.k, logits.size(-1))
        kth = torch.topk(logits, k, dim=-1).values[..., -1:]  # (B, 1)
        return logits.masked_fill(logits < kth, float("-inf"))


class TopP:
    """Nucleus sampling: keep the smallest set of tokens whose probability reaches p."""

    def __init__(self, p: float = 0.9) -> None:
        if not 0 < p <= 1:
            raise ConfigError(f"top_p needs 0 < p <= 1, got {p}")
        self.p = p

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        # drop a token when the mass strictly before it already reaches p (the top token stays)
        drop_sorted = probs.cumsum(dim=-1) - probs >= self.p
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        return logits.masked_fill(drop, float("-inf"))


class Greedy:
    """Select the most likely token (a selector: ends a sampler chain)."""

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        return logits

    def select(
        self, logits: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        return logits.argmax(dim=-1)  # (B,)
