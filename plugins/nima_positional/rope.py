"""Rotary position embedding (RoPE), in either of its two layouts.

Each head's dimensions form D/2 pairs; pair i is rotated by the angle
`position * base**(-2i / head_dim)`. Which dimensions pair up is the layout:

- `half` (default; GPT-NeoX, Hugging Face LLaMA): dimension i of the first half with dimension
  i of the second half. Six elementwise passes over q and k, each way.
- `interleaved` (RoFormer, GPT-J, Meta's LLaMA): dimensions 2i and 2i+1, so a head is D/2
  complex numbers and the rotation is one complex multiply, forward and backward. The same
  model up to a fixed permutation of each head's q and k dimensions (scores are unchanged, so
  with i.i.d. init the two train alike). On gpt.gin's shapes (B 8, H 8, N 256, D 16), q and k
  of one layer forward and backward: 1.1 ms against `half`'s 2.8 ms, one CPU thread.

Angles, cos/sin and the rotation are computed in fp32 and cast back to the input dtype, so
low-precision inputs lose nothing to RoPE.

`prepare` computes cos/sin once per forward, from the fp32 inverse frequencies, for any position:
there is no table of max_len rows to fall off, so nothing reads position values on the host (no
device sync) and long decodes extrapolate. Measured on CPU for the gpt.gin shape (N 256,
D 16) computing costs 10 us against 7 us for a table gather, once per forward.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch

from nima.capabilities import triton_devices
from nima.errors import CapabilityError, ConfigError
from nima.models.positional import Positional


class RotaryAngles(NamedTuple):
    """What RoPE.prepare hands to every layer: fp32 cos and sin, (N, D/2) or (B, N, D/2)."""

    cos: torch.Tensor
    sin: torch.Tensor


def inverse_frequencies(
    head_dim: int, base: float = 10000.0, device: torch.device | str | None = None
) -> torch.Tensor:
    """base**(-2i / head_dim) for each pair i, fp32 (D/2,)."""
    if head_dim % 2:
        raise ConfigError(f"RoPE needs an even head_dim, got {head_dim}")
    exponents = torch.arange(0, head_dim, 2, device=device, dtype=torch.float32)
    return base ** (-exponents / head_dim)


def rope_cos_sin(
    positions: torch.Tensor, head_dim: int, base: float = 10000.0, dtype=torch.float32
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of the rotation angles, each of shape positions.shape + (head_dim // 2,)."""
    inv_freq = inverse_frequencies(head_dim, base, positions.device)
    return _cos_sin(positions, inv_freq, dtype)


def _cos_sin(
    positions: torch.Tensor, inv_freq: torch.Tensor, dtype=torch.float32
) -> tuple[torch.Tensor, torch.Tensor]:
    angles = positions.to(torch.float32)[..., None] * inv_freq  # (..., D/2), fp32
    return angles.cos().to(dtype), angles.sin().to(dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x (B, H, N, D) by cos/sin of shape (N, D/2) or (B, N, D/2); the reference math."""
    if cos.dim() == 3:
        cos, sin = cos[:, None], sin[:, None]  # (B, 1, N, D/2): broadcast over heads
    x1, x2 = x.float().chunk(2, dim=-1)  # (B, H, N, D/2) each
    cos, sin = cos.float(), sin.float()
    rotated = torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)
    return rotated.to(x.dtype)


def apply_rope_interleaved(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x (B, H, N, D) whose pairs are dimensions (2i, 2i+1): x as D/2 complex numbers
    times cos + i sin, cos/sin (N, D/2) or (B, N, D/2). One complex multiply each way."""
    turn = torch.complex(cos.float(), sin.float()).unsqueeze(-2)  # (B?, N, 1, D/2): over heads
    # In (B, N, H, D) order, the memory order of q and k sliced from a fused qkv projection
    return _InterleavedRotation.apply(x.transpose(1, 2), turn).transpose(1, 2)


class _InterleavedRotation(torch.autograd.Function):
    """x (B, N, H, D) times e^(i angle) pairwise; the gradient is the rotation back, e^(-i angle).

    Written out so that neither pass copies q or k: autograd's own view_as_real backward makes
    the incoming gradient contiguous first, and its result then needs another copy back into
    the layout of the fused projection.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, turn: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(turn)
        return _times(x, turn).to(x.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (turn,) = ctx.saved_tensors
        return _times(grad, turn.conj()).to(grad.dtype), None


def _times(x: torch.Tensor, turn: torch.Tensor) -> torch.Tensor:
    """x (..., D) as D/2 complex numbers (2i, 2i+1) times turn (..., D/2): fp32 (..., D)."""
    pairs = x.float().unflatten(-1, (-1, 2))  # (..., D/2, 2)
    # view_as_complex needs whole complex numbers in memory; torch.compile fuses the copy
    if torch.compiler.is_compiling() or not _whole_complex_numbers(pairs):
        pairs = pairs.contiguous()
    return torch.view_as_real(torch.view_as_complex(pairs) * turn).flatten(-2)


def _whole_complex_numbers(pairs: torch.Tensor) -> bool:
    """Can view_as_complex read pairs (..., 2) in place: real and imaginary side by side."""
    strides = pairs.stride()
    return (
        strides[-1] == 1
        and pairs.storage_offset() % 2 == 0
        and all(s % 2 == 0 for s in strides[:-1])
    )


ROTATIONS = {"half": apply_rope, "interleaved": apply_rope_interleaved}


def check_integer(positions: torch.Tensor, plugin: str) -> None:
    """Positions are integer tensors (a dtype check: no value is read, so no device sync)."""
    if positions.is_floating_point() or positions.is_complex():
        raise TypeError(f"positional.{plugin}: positions must be integers, got {positions.dtype}")


def check_shape(shape: tuple[int, ...], batch: int, n: int, plugin: str) -> None:
    """Positions (or tables gathered at them) are (N,) or (B, N) for a sequence (B, N)."""
    if tuple(shape) not in ((n,), (batch, n)):
        raise ValueError(
            f"positional.{plugin}: positions of shape {tuple(shape)} do not match a "
            f"sequence of batch {batch} and length {n}; expected ({n},) or ({batch}, {n})."
        )


def check_positions(positions: torch.Tensor, batch: int, n: int, plugin: str) -> None:
    """Positions must be integers of shape (N,) or (B, N) matching the sequence they index."""
    check_integer(positions, plugin)
    check_shape(positions.shape, batch, n, plugin)


class RoPE(Positional):
    """Rotary position embedding on q and k; the family's RoPE reference (half layout)."""

    plugin_name = "rope"  # in error messages
    layouts: tuple[str, ...] = tuple(ROTATIONS)

    def __init__(
        self,
        *,
        d_model: int = 0,
        n_heads: int = 0,
        head_dim: int = 0,
        max_len: int = 0,
        base: float = 10000.0,
        layout: Literal["half", "interleaved"] = "half",
    ):
        super().__init__(d_model=d_model, n_heads=n_heads, head_dim=head_dim, max_len=max_len)
        if layout not in self.layouts:
            raise ConfigError(
                f"positional.{self.plugin_name}: layout={layout!r} is not one it implements; "
                f"valid: {', '.join(map(repr, self.layouts))}."
            )
        self.base, self.layout = base, layout
        self._rotation = ROTATIONS[layout]
        # Rebuilt, not saved, so checkpoints stay lean; kept fp32 by _apply.
        self.register_buffer("inv_freq", inverse_frequencies(head_dim, base), persistent=False)

    def _apply(self, fn, recurse=True):
        """`module.to(bfloat16)` casts floating buffers: rebuild inv_freq in fp32 where it went.

        So a bf16 model keeps fp32 angles (a bf16 inv_freq puts position 4000 up to 1.7 rad off
        at head_dim 64), and `to_empty` after meta-device init gets real values.
        """
        super()._apply(fn, recurse)
        self.inv_freq = inverse_frequencies(self.head_dim, self.base, self.inv_freq.device)
        return self

    def prepare(self, positions: torch.Tensor) -> RotaryAngles:
        """fp32 cos/sin (N, D/2) or (B, N, D/2) for integer positions (N,) or (B, N), any value."""
        check_integer(positions, type(self).plugin_name)
        return RotaryAngles(*_cos_sin(positions.to(self.inv_freq.device), self.inv_freq))

    def _angles(self, q: torch.Tensor, positions: RotaryAngles | torch.Tensor) -> RotaryAngles:
        """What prepare gave, or raw positions (a direct call outside a model) prepared now."""
        angles = positions if isinstance(positions, RotaryAngles) else self.prepare(positions)
        check_shape(angles.cos.shape[:-1], q.shape[0], q.shape[2], type(self).plugin_name)
        return angles

    def rotate(
        self, q: torch.Tensor, k: torch.Tensor, positions: RotaryAngles | torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """q (B, H, N, D), k (B, Hkv, N, D) at RotaryAngles from prepare (or raw positions)."""
        cos, sin = self._angles(q, positions)
        return self._rotation(q, cos, sin), self._rotation(k, cos, sin)

    def extra_repr(self) -> str:
        return f"head_dim={self.head_dim}, base={self.base}, layout={self.layout}"


class RoPETriton(RoPE):
    """RoPE with q and k rotated by one fused Triton kernel (forward and backward)."""

    plugin_name = "rope_triton"
    layouts = ("half",)  # the kernel pairs dimension i with i + D/2

    def rotate(
        self, q: torch.Tensor, k: torch.Tensor, positions: RotaryAngles | torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Same contract and numbers as RoPE.rotate (half layout); out of place."""
        devices = triton_devices()
        if q.device.type not in devices:
            raise CapabilityError(
                f"positional.rope_triton runs on {devices or 'nothing (triton is not installed)'}, "
                f"got a {q.device.type} tensor. Use positional.rope there, or set "
                "TRITON_INTERPRET=1 before starting Python to run the kernel on the CPU (slow)."
            )
        from nima_positional.rope_triton import rope_triton  # lazy: triton is optional

        cos, sin = self._angles(q, positions)
        return rope_triton(q, k, cos, sin)
