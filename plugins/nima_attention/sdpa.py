"""attention.sdpa: torch.nn.functional.scaled_dot_product_attention under the NIMA contract.

Causal attention is aligned bottom-right (query i sees keys j <= i + Nk - Nq). SDPA's
`is_causal` aligns top-left, which is the same only when Nq == Nk, so:

- Nq == Nk: `is_causal=True`;
- Nq == 1 (one-token decode): no mask, the last query sees every key;
- Nq < Nk (chunked prefill): `causal_lower_right(Nq, Nk)`, which the fused flash and
  memory-efficient kernels take natively; every row sees at least one key;
- Nq > Nk, or a key padding mask: an explicit boolean mask. Here a query row may see no key,
  for which SDPA gives NaN (or backend-dependent values); such rows are shown every key, so
  the softmax stays finite, and their output is then multiplied by zero, which also zeroes
  their gradients;
- an additive bias: SDPA's float `attn_mask`, in q's dtype, with -inf where a key is not visible
  (rows with no visible key handled as above). Its gradient flows back to the bias.

`fp32=True` attends in fp32 whatever q's dtype (autocast off inside; the output is cast back to
q's dtype). More exact, and on a CPU faster for small heads: torch's CPU flash kernel is slower
in bf16 there. benchmarks/bench_sdpa_fp32.py on a 2-core AMD EPYC (avx512_bf16), one thread,
causal, forward and backward, bf16 against fp32 (casts included): B 8, N 256, D 16 (gpt.gin)
24.8 against 15.3 ms; D 32 15.5 / 12.8; D 64 11.4 / 11.4; but B 4, N 1024, D 64 187 against
259 ms. So it is a choice, off by default; `fp32="cpu"` upcasts on a CPU only (on a GPU the
flash kernels want bf16 or fp16).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from nima.contracts import visible_keys
from nima.errors import ConfigError
from nima_attention.common import check_inputs

HALF = (torch.float16, torch.bfloat16)


class SdpaAttention(nn.Module):
    """torch scaled_dot_product_attention (flash / memory-efficient / cuDNN / math backends)."""

    def __init__(self, fp32: bool | Literal["cpu"] = False) -> None:
        super().__init__()
        if not (isinstance(fp32, bool) or fp32 == "cpu"):
            raise ConfigError(
                f"attention.sdpa: fp32={fp32!r} is not one of True (attend in fp32 on every "
                f"device), False (in the inputs' dtype) or 'cpu' (in fp32 on a CPU only)."
            )
        self.fp32 = fp32

    def upcasts(self, device_type: str) -> bool:
        """Does it attend in fp32 on this device type (fp32=True, or 'cpu' on a CPU)?"""
        return self.fp32 is True or (self.fp32 == "cpu" and device_type == "cpu")

    def extra_repr(self) -> str:
        return f"fp32={self.fp32}" if self.fp32 else ""

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
        check_inputs("sdpa", q, k, v, key_padding_mask, bias)
        dtype = q.dtype  # k's and v's too (checked)
        if self.upcasts(q.device.type) and (
            dtype in HALF or torch.is_autocast_enabled(q.device.type)
        ):
            if dtype in HALF:
                q, k, v = q.float(), k.float(), v.float()
            with torch.autocast(q.device.type, enabled=False):  # which would cast them down
                kwargs = dict(scale=scale, key_padding_mask=key_padding_mask, bias=bias)
                out = self.forward(q, k, v, causal=causal, **kwargs)  # bias: cast to q's dtype
            return out.to(dtype)
        n_q, n_k = q.shape[2], k.shape[2]
        gqa = q.shape[1] != k.shape[1]
        if bias is not None:
            return self._with_bias(q, k, v, causal, scale, key_padding_mask, bias.to(q.dtype))
        if key_padding_mask is None:
            if not causal or n_q == 1:  # a lone query is the last position: it sees every key
                return F.scaled_dot_product_attention(q, k, v, scale=scale, enable_gqa=gqa)
            if n_q == n_k:  # top-left and bottom-right agree
                return F.scaled_dot_product_attention(
                    q, k, v, is_causal=True, scale=scale, enable_gqa=gqa
                )
            if n_q < n_k:
                # Imported here: torch.nn.attention.bias imports triton, which must not happen
                # at plugin registration (TRITON_INTERPRET is read at triton's first import).
                from torch.nn.attention.bias import causal_lower_right

                return F.scaled_dot_product_attention(
                    q, k, v, attn_mask=causal_lower_right(n_q, n_k), scale=scale, enable_gqa=gqa
                )
        visible = visible_keys(
            n_q, n_k, causal=causal, key_padding_mask=key_padding_mask, device=q.device
        )  # (B or 1, 1, Nq, Nk)
        has_key = visible.any(dim=-1, keepdim=True)  # (B or 1, 1, Nq, 1)
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=visible | ~has_key, scale=scale, enable_gqa=gqa
        )
        return out * has_key

    @staticmethod
    def _with_bias(
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        causal: bool,
        scale: float | None,
        key_padding_mask: torch.Tensor | None,
        bias: torch.Tensor,
    ) -> torch.Tensor:
        """The bias as a float attn_mask; invisible keys at -inf, empty rows zeroed."""
        n_q, n_k = q.shape[2], k.shape[2]
        gqa = q.shape[1] != k.shape[1]
        visible = visible_keys(
            n_q,
            n_k,
            causal=causal and n_q > 1,
            key_padding_mask=key_padding_mask,
            device=q.device,
        )  # (B or 1, 1, Nq, Nk), or None when every key is visible; fmt: skip
        if visible is None:
            return F.scaled_dot_product_attention(
                q, k, v, attn_mask=bias, scale=scale, enable_gqa=gqa
            )
        has_key = visible.any(dim=-1, keepdim=True)  # (B or 1, 1, Nq, 1)
        mask = bias.masked_fill(~(visible | ~has_key), float("-inf"))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale, enable_gqa=gqa)
        return out * has_key
