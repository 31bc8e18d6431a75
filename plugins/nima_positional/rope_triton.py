"""Fused RoPE in Triton: one kernel rotates q and k together, forward and backward.

One program per token (b, n): it loads that token's cos/sin row once and rotates every head of
q and of k with it (q and k may have different head counts, GQA). The half-split layout pairs
dimension i with i + D/2. The backward of a rotation by theta is the rotation by -theta, so the
same kernel serves both with the sign of sin flipped. Outputs are always fresh tensors: the
caller's q and k are never written.

Importing this module imports triton; `nima_positional.rope.RoPETriton` imports it lazily.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

DTYPES = (torch.float32, torch.float16, torch.bfloat16)


@triton.jit
def _rope_kernel(
    q_ptr, k_ptr, q_out_ptr, k_out_ptr, cos_ptr, sin_ptr,
    q_sb, q_sh, q_sn, k_sb, k_sh, k_sn,
    qo_sb, qo_sh, qo_sn, ko_sb, ko_sh, ko_sn,
    cs_sb, cs_sn,
    N, H, HKV, HALF,
    SIN_SIGN: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_HKV: tl.constexpr,
    BLOCK_D: tl.constexpr,
):  # fmt: skip
    pid = tl.program_id(0).to(tl.int64)  # int64: offsets of large tensors overflow int32
    b = pid // N
    n = pid % N

    d = tl.arange(0, BLOCK_D)  # (BLOCK_D,) pair index i, paired dims are i and i + HALF
    d_mask = d < HALF
    cos = tl.load(cos_ptr + b * cs_sb + n * cs_sn + d, mask=d_mask, other=0.0)
    sin = SIN_SIGN * tl.load(sin_ptr + b * cs_sb + n * cs_sn + d, mask=d_mask, other=0.0)
    cos, sin = cos[None, :], sin[None, :]  # (1, BLOCK_D)

    # q: all H heads of this token; k: all HKV heads, same angles
    _rotate_heads(q_ptr + b * q_sb + n * q_sn, q_out_ptr + b * qo_sb + n * qo_sn, q_sh, qo_sh,
                  H, HALF, d, d_mask, cos, sin, BLOCK_H)  # fmt: skip
    _rotate_heads(k_ptr + b * k_sb + n * k_sn, k_out_ptr + b * ko_sb + n * ko_sn, k_sh, ko_sh,
                  HKV, HALF, d, d_mask, cos, sin, BLOCK_HKV)  # fmt: skip


@triton.jit
def _rotate_heads(src_ptr, dst_ptr, src_sh, dst_sh, N_HEADS, HALF, d, d_mask, cos, sin,
                  BLOCK: tl.constexpr):  # fmt: skip
    """Rotate every head of one token: (BLOCK heads, BLOCK_D pairs) per half, in fp32."""
    h = tl.arange(0, BLOCK)[:, None]
    mask = (h < N_HEADS) & d_mask[None, :]
    src = src_ptr + h * src_sh + d[None, :]
    dst = dst_ptr + h * dst_sh + d[None, :]
    x1 = tl.load(src, mask=mask, other=0.0).to(tl.float32)
    x2 = tl.load(src + HALF, mask=mask, other=0.0).to(tl.float32)
    tl.store(dst, (x1 * cos - x2 * sin).to(dst_ptr.dtype.element_ty), mask=mask)
    tl.store(dst + HALF, (x2 * cos + x1 * sin).to(dst_ptr.dtype.element_ty), mask=mask)


def _new_output(x: torch.Tensor) -> torch.Tensor:
    """A fresh contiguous tensor like x for the kernel to fill (tests poison it with NaN)."""
    return torch.empty(x.shape, dtype=x.dtype, device=x.device)


def _rotate(
    q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, sin_sign: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Launch the kernel: rotate q (B, H, N, D) and k (B, Hkv, N, D) into new tensors."""
    # Any batch/head/sequence strides work; the head dimension must be unit-stride.
    q = q if q.stride(-1) == 1 else q.contiguous()
    k = k if k.stride(-1) == 1 else k.contiguous()
    B, H, N, D = q.shape
    Hkv = k.shape[1]
    q_out, k_out = _new_output(q), _new_output(k)
    cs_sb = cos.stride(0) if cos.dim() == 3 else 0  # (N, D/2) tables are shared by the batch
    _rope_kernel[(B * N,)](
        q, k, q_out, k_out, cos, sin,
        q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
        q_out.stride(0), q_out.stride(1), q_out.stride(2),
        k_out.stride(0), k_out.stride(1), k_out.stride(2),
        cs_sb, cos.stride(-2),
        N, H, Hkv, D // 2,
        SIN_SIGN=sin_sign,
        BLOCK_H=triton.next_power_of_2(H),
        BLOCK_HKV=triton.next_power_of_2(Hkv),
        BLOCK_D=triton.next_power_of_2(D // 2),
        num_warps=4 if H * D <= 4096 else 8,
    )  # fmt: skip
    return q_out, k_out


class _RoPEFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, cos, sin):
        ctx.save_for_backward(cos, sin)
        return _rotate(q, k, cos, sin, 1.0)

    @staticmethod
    def backward(ctx, grad_q, grad_k):
        cos, sin = ctx.saved_tensors
        dq, dk = _rotate(grad_q, grad_k, cos, sin, -1.0)  # the transpose of R(theta) is R(-theta)
        return dq, dk, None, None


def rope_triton(
    q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate q (B, H, N, D) and k (B, Hkv, N, D) by cos/sin (N, D/2) or (B, N, D/2), out of place.

    Same numbers as `apply_rope` (fp32 math, cast back to the input dtype); differentiable in q, k.
    """
    B, H, N, D = q.shape
    if k.dim() != 4 or (k.shape[0], k.shape[2], k.shape[3]) != (B, N, D):
        raise ValueError(f"rope_triton: q {tuple(q.shape)} and k {tuple(k.shape)} do not match")
    if D % 2:
        raise ValueError(f"rope_triton: head_dim must be even, got {D}")
    if q.dtype not in DTYPES or k.dtype not in DTYPES:
        raise TypeError(f"rope_triton supports {DTYPES}, got q {q.dtype} and k {k.dtype}")
    if cos.shape[-2:] != (N, D // 2) or cos.dim() not in (2, 3) or cos.shape != sin.shape:
        raise ValueError(f"rope_triton: cos/sin {tuple(cos.shape)} do not fit q {tuple(q.shape)}")
    cos = cos.to(device=q.device, dtype=torch.float32).contiguous()
    sin = sin.to(device=q.device, dtype=torch.float32).contiguous()
    return _RoPEFunction.apply(q, k, cos, sin)
