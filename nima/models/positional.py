"""Base class for positional plugins: identity at each point a plugin may act at.

Per forward, the model calls a positional module in this order:

    prepared = positional.prepare(positions)     # once: positions (N,) or (B, N), integers
    x = positional.embed(x, prepared)            # once, on the token embeddings
    bias = positional.bias(positions, k_positions)  # once: an additive attention bias, or None
    q, k = positional.rotate(q, k, prepared)     # in every layer, on queries and keys

`prepare` is where per-forward work goes (RoPE's cos/sin), so a model with many layers computes
its position tables once, not once per layer. `bias` gets the raw query positions and the key
positions (the same tensor without a KV cache; the cached keys' positions with one) and returns
a float tensor broadcastable to (B, H, Nq, Nk) that every layer's attention adds to its scores
(ALiBi), or None. No point may read position values on the host (`.item()`, `bool(t)`, `min()`
compared in Python): such a device-to-host sync stalls the GPU and breaks torch.compile graphs
and CUDA graphs. `embed` and `rotate` receive whatever `prepare` returned; by default that is the
positions themselves.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class Positional(nn.Module):
    """A positional encoding; subclasses override the points where they act.

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

    def prepare(self, positions: torch.Tensor) -> Any:
        """Once per forward: what `embed` and every layer's `rotate` need. Positions (N,) or (B, N)."""
        return positions

    def embed(self, x: torch.Tensor, positions: Any) -> torch.Tensor:
        """Token embeddings (B, N, d_model) -> (B, N, d_model); `positions` is what prepare gave."""
        return x

    def bias(self, q_positions: torch.Tensor, k_positions: torch.Tensor) -> torch.Tensor | None:
        """Query positions (Nq,) or (B, Nq), key positions (Nk,) or (B, Nk) -> an additive
        attention bias broadcastable to (B, H, Nq, Nk), or None (no bias)."""
        return None

    def rotate(
        self, q: torch.Tensor, k: torch.Tensor, positions: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Queries (B, H, N, D) and keys (B, Hkv, N, D) -> rotated q, k; `positions` as embed."""
        return q, k
