"""attention.softcap: attention whose logits are soft-capped with tanh, as in Gemma 2.

    scores = cap * tanh((q @ k^T) * scale / cap)

bounds every logit to (-cap, cap) while leaving small logits almost unchanged, which keeps
a few runaway scores from saturating the softmax. As cap -> infinity it is plain attention;
`cap = None` (or inf) skips the capping altogether and then equals attention.reference. In gin
write `softcap.cap = None`: gin cannot read back the `inf` it would write into config.gin.

Plain PyTorch, under the full NIMA attention contract (nima.contracts.Attention): GQA/MQA,
bottom-right causal alignment when Nq != Nk, a boolean key padding mask, an additive bias
broadcastable to (B, H, Nq, Nk), and zeros (with zero gradients) for a query row that sees no
key. The bias is added after the capping: the cap bounds what q and k say, while a positional
bias such as ALiBi's distance penalty keeps growing with the distance instead of saturating.
"""

from __future__ import annotations

import math

import torch
from nima import NimaError
from nima.contracts import visible_keys
from torch import nn


class SoftcapError(NimaError, ValueError):
    """A bad `cap` or inputs that break the attention contract; NimaError makes the CLI print
    one paragraph instead of a traceback."""


class SoftcapAttention(nn.Module):
    """Attention with tanh logit soft-capping (Gemma 2); cap=None is plain attention."""

    def __init__(self, cap: float | None = 50.0) -> None:
        super().__init__()
        if cap is not None and not cap > 0:  # `not cap > 0` also rejects NaN
            raise SoftcapError(
                f"attention.softcap: cap must be a positive number (or None for no capping); "
                f"got {cap!r}. Gemma 2 uses 50.0, e.g. `softcap.cap = 50.0`."
            )
        self.cap = None if cap is None or math.isinf(cap) else float(cap)

    def extra_repr(self) -> str:
        return f"cap={self.cap}"

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
        """q (B, H, Nq, D), k and v (B, Hkv, Nk, D) -> (B, H, Nq, D) in q's dtype."""
        _check_inputs(q, k, v, key_padding_mask)
        B, H, Nq, D = q.shape
        Hkv, Nk = k.shape[1], k.shape[2]
        scale = D**-0.5 if scale is None else scale
        # Half precision is computed in float32 (as the reference does), float64 stays float64.
        dtype = torch.promote_types(q.dtype, torch.float32)

        # GQA: query head h uses kv head h // (H // Hkv); group queries instead of repeating K/V.
        qg = q.to(dtype).reshape(B, Hkv, H // Hkv, Nq, D)  # (B, Hkv, G, Nq, D)
        kg = k.to(dtype)[:, :, None]  # (B, Hkv, 1, Nk, D)
        vg = v.to(dtype)[:, :, None]
        scores = (qg @ kg.transpose(-2, -1)) * scale  # (B, Hkv, G, Nq, Nk)
        if self.cap is not None:
            scores = self.cap * torch.tanh(scores / self.cap)
        if bias is not None:  # broadcastable to (B, H, Nq, Nk): group its heads as the queries'
            bias = bias.to(dtype).expand(B, H, Nq, Nk).reshape(B, Hkv, H // Hkv, Nq, Nk)
            scores = scores + bias

        visible = visible_keys(
            Nq, Nk, causal=causal, key_padding_mask=key_padding_mask, device=q.device
        )
        if visible is not None:
            visible = visible[:, :, None]  # (B|1, 1, 1, Nq, Nk): broadcast over kv heads and groups
            # A finite fill keeps rows with no visible key NaN-free; multiplying the
            # probabilities by the mask then makes those rows (and their gradients) exactly zero.
            scores = scores.masked_fill(~visible, torch.finfo(dtype).min)
        probs = scores.softmax(dim=-1)
        if visible is not None:
            probs = probs * visible
        out = probs @ vg  # (B, Hkv, G, Nq, D)
        return out.reshape(B, H, Nq, D).to(q.dtype)


def _check_inputs(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_padding_mask: torch.Tensor | None
) -> None:
    """Name the broken part of the contract rather than fail deep inside a matmul."""
    shapes = f"got q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}"
    if q.ndim != 4 or k.shape != v.shape or k.ndim != 4:
        raise SoftcapError(
            f"attention.softcap: q must be (B, H, Nq, D), k and v (B, Hkv, Nk, D); {shapes}."
        )
    if k.shape[0] != q.shape[0] or k.shape[3] != q.shape[3] or q.shape[1] % k.shape[1]:
        raise SoftcapError(
            f"attention.softcap: q and k/v must share B and D, and H must be a multiple of "
            f"Hkv; {shapes}."
        )
    if key_padding_mask is not None and (
        key_padding_mask.dtype != torch.bool or key_padding_mask.shape != (k.shape[0], k.shape[2])
    ):
        raise SoftcapError(
            f"attention.softcap: key_padding_mask must be bool (B, Nk) = "
            f"({k.shape[0]}, {k.shape[2]}), True where a key may be attended; got "
            f"{key_padding_mask.dtype} {tuple(key_padding_mask.shape)}."
        )
