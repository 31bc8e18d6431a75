"""Base class for positional plugins: identity at each of the three points a plugin may act at."""

from __future__ import annotations

import torch
from torch import nn


class Positional(nn.Module):
    """A positional encoding; subclasses override the point where they act (embed or rotate).

    Built by the model as `cls(d_model=, n_heads=, head_dim=, max_len=)` plus gin-bound options.
    """

    def __init__(self, *, d_model: int = 0, n_heads: int = 0, head_dim: int = 0, max_len: int = 0):
        super().__init__()
        self.d_model, self.n_heads, self.head_dim, self.max_len = (
            d_model,
            n_heads,
            head_dim,
            max_len,
        )

    def embed(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Token embeddings (B, N, d_model) -> (B, N, d_model). Positions (N,) or (B, N)."""
        return x

    def rotate(
        self, q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Queries (B, H, N, D) and keys (B, Hkv, N, D) at `positions` -> rotated q, k."""
        return q, k
