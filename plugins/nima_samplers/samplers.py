"""Logits processors (temperature, top-k, top-p) and the greedy selector; compose in any order."""

from __future__ import annotations

from typing import Annotated

import torch

from nima.validation import Range, checked


@checked
class Temperature:
    """Divide logits by a temperature (below 1 sharpens, above 1 flattens; greedy is argmax)."""

    def __init__(self, temperature: Annotated[float, Range(gt=0)] = 1.0) -> None:
        self.temperature = temperature

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:  # (B, V) -> (B, V)
        return logits / self.temperature


@checked
class TopK:
    """Keep the k largest logits of each row; the rest become -inf."""

    def __init__(self, k: Annotated[int, Range(ge=1)] = 50) -> None:
        self.k = k

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        k = min(self.k, logits.size(-1))
        kth = torch.topk(logits, k, dim=-1).values[..., -1:]  # (B, 1)
        return logits.masked_fill(logits < kth, float("-inf"))


@checked
class TopP:
    """Nucleus sampling: keep the smallest set of tokens whose probability reaches p."""

    def __init__(self, p: Annotated[float, Range(gt=0, le=1)] = 0.9) -> None:
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
