"""attention.sdpa: torch.nn.functional.scaled_dot_product_attention under the NIMA contract.

SDPA's `is_causal` aligns the mask top-left, so causal attention with Nq != Nk gets an explicit
bottom-right boolean mask. SDPA gives NaN for a query row with no visible key; such rows are
shown every key (so the softmax stays finite) and their output is then multiplied by zero,
which also zeroes their gradients.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nima.contracts import visible_keys
from nima_attention.common import check_inputs


class SdpaAttention(nn.Module):
    """torch scaled_dot_product_attention (flash / memory-efficient / cuDNN / math backends)."""

    def forward(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        *,
        causal: bool,
        scale: float | None = None,
        key_padding_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        check_inputs("sdpa", q, k, v, key_padding_mask)
        n_q, n_k = q.shape[2], k.shape[2]
        gqa = q.shape[1] != k.shape[1]
        if key_padding_mask is None and (not causal or n_q == n_k):
            # Top-left and bottom-right agree when Nq == Nk: the fused kernels' fast path.
            return F.scaled_dot_product_attention(
                q, k, v, is_causal=causal, scale=scale, enable_gqa=gqa
            )
        visible = visible_keys(
            n_q, n_k, causal=causal, key_padding_mask=key_padding_mask, device=q.device
        )  # (B or 1, 1, Nq, Nk)
        has_key = visible.any(dim=-1, keepdim=True)  # (B or 1, 1, Nq, 1)
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=visible | ~has_key, scale=scale, enable_gqa=gqa
        )
        return out * has_key
