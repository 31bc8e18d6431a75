"""Rotary position embedding (RoPE), half-split layout as in GPT-NeoX and LLaMA.

Dimension i of the first half and dimension i of the second half of each head form one pair,
rotated by the angle `position * base**(-2i / head_dim)`. Angles, cos/sin and the rotation are
computed in fp32 and cast back to the input dtype, so low-precision inputs lose nothing to RoPE.
"""

from __future__ import annotations

import torch

from nima.capabilities import triton_devices
from nima.errors import CapabilityError, ConfigError
from nima.models.positional import Positional


def rope_cos_sin(
    positions: torch.Tensor, head_dim: int, base: float = 10000.0, dtype=torch.float32
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of the rotation angles, each of shape positions.shape + (head_dim // 2,)."""
    if head_dim % 2:
        raise ConfigError(f"RoPE needs an even head_dim, got {head_dim}")
    exponents = torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.float32)
    inv_freq = base ** (-exponents / head_dim)  # (D/2,)
    angles = positions.to(torch.float32)[..., None] * inv_freq  # (..., D/2)
    return angles.cos().to(dtype), angles.sin().to(dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x (B, H, N, D) by cos/sin of shape (N, D/2) or (B, N, D/2); the reference math."""
    if cos.dim() == 3:
        cos, sin = cos[:, None], sin[:, None]  # (B, 1, N, D/2): broadcast over heads
    x1, x2 = x.float().chunk(2, dim=-1)  # (B, H, N, D/2) each
    cos, sin = cos.float(), sin.float()
    rotated = torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)
    return rotated.to(x.dtype)


def check_positions(positions: torch.Tensor, batch: int, n: int, plugin: str) -> None:
    """Positions must be integers of shape (N,) or (B, N) matching the sequence they index."""
    if positions.is_floating_point() or positions.is_complex():
        raise TypeError(f"positional.{plugin}: positions must be integers, got {positions.dtype}")
    if positions.shape not in ((n,), (batch, n)):
        raise ValueError(
            f"positional.{plugin}: positions of shape {tuple(positions.shape)} do not match a "
            f"sequence of batch {batch} and length {n}; expected ({n},) or ({batch}, {n})."
        )


class RoPE(Positional):
    """Rotary position embedding on q and k (half-split layout); the family's RoPE reference."""

    def __init__(
        self,
        *,
        d_model: int = 0,
        n_heads: int = 0,
        head_dim: int = 0,
        max_len: int = 0,
        base: float = 10000.0,
    ):
        super().__init__(d_model=d_model, n_heads=n_heads, head_dim=head_dim, max_len=max_len)
        self.base = base
        # Cached tables for positions [0, max_len); rebuilt, not saved, so checkpoints stay lean.
        cos, sin = rope_cos_sin(torch.arange(max_len), head_dim, base)  # (max_len, D/2)
        self.register_buffer("cos_cached", cos, persistent=False)
        self.register_buffer("sin_cached", sin, persistent=False)

    def cos_sin(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """fp32 cos/sin for positions (N,) or (B, N): from the cache, or computed beyond it."""
        positions = positions.to(self.cos_cached.device)
        lo, hi = positions.aminmax() if positions.numel() else (0, 0)
        # module.to(bfloat16) casts buffers too: a cache no longer in fp32 is not used
        if self.cos_cached.dtype == torch.float32 and 0 <= lo and hi < self.max_len:
            return self.cos_cached[positions], self.sin_cached[positions]
        return rope_cos_sin(positions, self.head_dim, self.base)

    def rotate(
        self, q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """q (B, H, N, D), k (B, Hkv, N, D), positions (N,) or (B, N) -> rotated q, k."""
        check_positions(positions, q.shape[0], q.shape[2], "rope")
        cos, sin = self.cos_sin(positions)
        return apply_rope(q, cos, sin), apply_rope(k, cos, sin)


class RoPETriton(RoPE):
    """RoPE with q and k rotated by one fused Triton kernel (forward and backward)."""

    def rotate(
        self, q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Same contract and numbers as RoPE.rotate; out of place."""
        check_positions(positions, q.shape[0], q.shape[2], "rope_triton")
        devices = triton_devices()
        if q.device.type not in devices:
            raise CapabilityError(
                f"positional.rope_triton runs on {devices or 'nothing (triton is not installed)'}, "
                f"got a {q.device.type} tensor. Use positional.rope there, or set "
                "TRITON_INTERPRET=1 before starting Python to run the kernel on the CPU (slow)."
            )
        from nima_positional.rope_triton import rope_triton  # lazy: triton is optional

        cos, sin = self.cos_sin(positions)
        return rope_triton(q, k, cos, sin)
