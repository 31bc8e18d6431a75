"""attention.reference: the family's numerical reference, written as plain explicit math.

Scores, additive bias, masks, softmax, weighted sum, nothing fused. Half-precision inputs are computed in
float32 and the result cast back, so the reference is at least as accurate as any kernel.
"""

from __future__ import annotations

import torch
from einops import einsum, rearrange
from torch import nn

from nima.contracts import visible_keys
from nima_attention.common import check_inputs


class ReferenceAttention(nn.Module):
    """Explicit-math attention (einops): the numerical reference every attention plugin matches."""

    def forward(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        *,
        causal: bool,
        scale: float | None = None,
        key_padding_mask: torch.Tensor | None = None,
        bias: torch.Tensor | None = None,
    ) -> torch.Tensor:
        check_inputs("reference", q, k, v, key_padding_mask, bias)
        n_kv_heads, n_q, n_k, head_dim = k.shape[1], q.shape[2], k.shape[2], q.shape[3]
        scale = head_dim**-0.5 if scale is None else scale
        dtype = torch.promote_types(q.dtype, torch.float32)
        # GQA: query heads are grouped onto their shared kv head, K/V are never repeated.
        qg = rearrange(q.to(dtype), "b (hkv g) i d -> b hkv g i d", hkv=n_kv_heads)
        scores = einsum(qg, k.to(dtype), "b hkv g i d, b hkv j d -> b hkv g i j") * scale
        if bias is not None:  # added to the scaled scores, its heads grouped as the queries'
            bias = bias.to(dtype).expand(q.shape[0], q.shape[1], n_q, n_k)  # (B, H, Nq, Nk)
            scores = scores + rearrange(bias, "b (hkv g) i j -> b hkv g i j", hkv=n_kv_heads)
        visible = visible_keys(
            n_q, n_k, causal=causal, key_padding_mask=key_padding_mask, device=q.device
        )
        if visible is not None:
            visible = visible[:, :, None]  # (B or 1, 1, 1, Nq, Nk) against (b, hkv, g, i, j)
            # A finite fill keeps fully masked rows NaN-free in both passes; multiplying by the
            # mask after the softmax then zeroes them (and their gradients) exactly.
            scores = scores.masked_fill(~visible, torch.finfo(dtype).min)
        probs = scores.softmax(dim=-1)
        if visible is not None:
            probs = probs * visible
        out = einsum(probs, v.to(dtype), "b hkv g i j, b hkv j d -> b hkv g i d")
        return rearrange(out, "b hkv g i d -> b (hkv g) i d").to(q.dtype)
