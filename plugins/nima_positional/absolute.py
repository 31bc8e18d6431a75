"""Absolute position embeddings added to the token embeddings: learned, sinusoidal, and none."""

from __future__ import annotations

import math
from typing import Annotated

import torch
import torch.nn.functional as F
from torch import nn

from nima.errors import ConfigError
from nima.models.positional import Positional
from nima.validation import Range
from nima_positional.rope import check_positions


class Learned(Positional):
    """Learned absolute position embedding (GPT-2), added to the token embeddings.

    Only the sequence length is checked (N <= max_len), from the shape: reading position values
    would be a device sync. Explicit positions must lie in [0, max_len); beyond that is the
    caller's error (on CPU torch raises IndexError, on CUDA a device-side assert fires).
    """

    def __init__(self, *, d_model: int = 0, n_heads: int = 0, head_dim: int = 0, max_len: int = 0):
        super().__init__(d_model=d_model, n_heads=n_heads, head_dim=head_dim, max_len=max_len)
        self.weight = nn.Parameter(torch.randn(max_len, d_model) * 0.02)  # (max_len, d_model)

    def embed(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """x (B, N, d_model) + the embedding of positions (N,) or (B, N)."""
        check_positions(positions, x.shape[0], x.shape[1], "learned")
        if x.shape[1] > self.max_len:
            raise ValueError(
                f"positional.learned has embeddings for positions 0..{self.max_len - 1} "
                f"(max_len={self.max_len}), got a sequence of {x.shape[1]} tokens. Shorten the "
                "sequence, raise the model's context length, or use positional.rope or "
                "positional.sinusoidal, which extrapolate."
            )
        return x + F.embedding(positions, self.weight).to(x.dtype)  # (N or B, N, d_model)


def sinusoidal_table(positions: torch.Tensor, d_model: int) -> torch.Tensor:
    """The fixed sin/cos embedding of "Attention Is All You Need": positions.shape + (d_model,)."""
    if d_model % 2:
        raise ConfigError(f"positional.sinusoidal needs an even d_model, got {d_model}")
    exponents = torch.arange(0, d_model, 2, device=positions.device, dtype=torch.float32)
    inv_freq = torch.exp(-math.log(10000.0) * exponents / d_model)  # (d_model/2,)
    angles = positions.to(torch.float32)[..., None] * inv_freq  # (..., d_model/2)
    # interleaved: even dims sin, odd dims cos
    return torch.stack((angles.sin(), angles.cos()), dim=-1).flatten(-2)


class Sinusoidal(Positional):
    """Fixed sinusoidal absolute position embedding, scaled to the token embeddings' size.

    The raw table has coordinates of RMS 1/sqrt(2) (each sin/cos pair has norm 1). The original
    Transformer adds it to token embeddings multiplied by sqrt(d_model), so both are of order 1;
    GPT-2-style token embeddings are N(0, 0.02) and not multiplied, so the raw table would drown
    the tokens 35 to 1. The table is scaled instead: `scale` is the RMS of each coordinate, 0.02
    by default, the std of the token (and learned position) embeddings at init.
    """

    def __init__(
        self,
        *,
        d_model: int = 0,
        n_heads: int = 0,
        head_dim: int = 0,
        max_len: int = 0,
        scale: Annotated[float, Range(gt=0)] = 0.02,
    ):
        super().__init__(d_model=d_model, n_heads=n_heads, head_dim=head_dim, max_len=max_len)
        if d_model % 2:
            raise ConfigError(f"positional.sinusoidal needs an even d_model, got {d_model}")
        self.scale = scale

    def embed(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """x (B, N, d_model) + the scaled table at positions (N,) or (B, N); any position works."""
        check_positions(positions, x.shape[0], x.shape[1], "sinusoidal")
        table = sinusoidal_table(positions.to(x.device), self.d_model)  # coordinates' RMS 1/sqrt(2)
        return x + (table * (self.scale * math.sqrt(2))).to(x.dtype)


class NoPositional(Positional):
    """No positional information (NoPE): the causal mask alone orders the tokens."""
