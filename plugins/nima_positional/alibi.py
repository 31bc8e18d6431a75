"""ALiBi: attention with linear biases (Press, Smith & Lewis 2021, "Train Short, Test Long").

No position embedding at all: every layer's attention adds `-slope_h * |i - j|` to the score of
query position i and key position j, with one fixed slope per head, a geometric sequence. The
bias depends only on the query-key offset and needs no table, so the model extrapolates to
sequences longer than it was trained on. Causal attention only ever sees j <= i, where the bias
is the paper's `slope * (j - i)`; the absolute value makes it symmetric for non-causal use.

Slopes (the paper's, and its reference code's for head counts that are not powers of two): for
n = 2^k heads, 2^(-8/n), 2^(-16/n), ..., 2^(-8); otherwise the slopes of the closest smaller
power of two m, then every other slope of 2m heads.
"""

from __future__ import annotations

import math

import torch

from nima.models.positional import Positional
from nima_positional.rope import check_integer


def alibi_slopes(n_heads: int) -> list[float]:
    """The geometric per-head slopes of ALiBi, largest first."""

    def power_of_two(n: int) -> list[float]:
        first = 2.0 ** (-8.0 / n)
        return [first ** (h + 1) for h in range(n)]

    m = 2 ** math.floor(math.log2(n_heads))
    if m == n_heads:
        return power_of_two(n_heads)
    return power_of_two(m) + power_of_two(2 * m)[0::2][: n_heads - m]


class ALiBi(Positional):
    """Attention with linear biases: a fixed per-head bias proportional to the query-key distance."""

    def __init__(self, *, d_model: int = 0, n_heads: int = 0, head_dim: int = 0, max_len: int = 0):
        super().__init__(d_model=d_model, n_heads=n_heads, head_dim=head_dim, max_len=max_len)
        # Rebuilt, not saved; kept fp32 by _apply (a bf16 model still gets fp32 slopes).
        self.register_buffer("slopes", self._slopes(), persistent=False)

    def _slopes(self, device: torch.device | None = None) -> torch.Tensor:
        return torch.tensor(alibi_slopes(self.n_heads), dtype=torch.float32, device=device)

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        self.slopes = self._slopes(self.slopes.device)
        return self

    def bias(self, q_positions: torch.Tensor, k_positions: torch.Tensor) -> torch.Tensor:
        """Positions (Nq,) or (B, Nq) and (Nk,) or (B, Nk) -> fp32 bias (1 or B, H, Nq, Nk)."""
        check_integer(q_positions, "alibi")
        check_integer(k_positions, "alibi")
        offsets = q_positions[..., :, None] - k_positions[..., None, :]  # (Nq, Nk) or (B, Nq, Nk)
        if offsets.dim() == 2:
            offsets = offsets[None]  # (1, Nq, Nk)
        distance = offsets.abs().to(torch.float32)[:, None]  # (1 or B, 1, Nq, Nk)
        return -self.slopes[:, None, None] * distance  # (1 or B, H, Nq, Nk)
