"""What every built-in attention shares: input validation and the visibility mask.

The contract (DESIGN.md, nima.contracts.Attention): q (B, H, Nq, D), k and v (B, Hkv, Nk, D),
H % Hkv == 0; causal queries are the LAST Nq positions (query i sees keys j <= i + Nk - Nq);
key_padding_mask is bool (B, Nk), True where a key may be attended; bias is an additive float
tensor broadcastable to (B, H, Nq, Nk).
"""

from __future__ import annotations

import torch

from nima.errors import NimaError


class AttentionInputError(NimaError, ValueError):
    """q, k, v or key_padding_mask break the attention contract (shape, dtype or device)."""


def check_inputs(
    plugin: str,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    key_padding_mask: torch.Tensor | None,
    bias: torch.Tensor | None = None,
) -> None:
    """Raise AttentionInputError naming the wrong shape and what would be valid."""
    shapes = f"got q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}"
    where = f"attention.{plugin}"
    if q.ndim != 4 or k.ndim != 4 or v.ndim != 4:
        raise AttentionInputError(
            f"{where}: q must be (B, H, Nq, D) and k, v (B, Hkv, Nk, D), all 4-D; {shapes}."
        )
    B, H, _, D = q.shape
    if k.shape != v.shape:
        raise AttentionInputError(
            f"{where}: k and v must have the same shape (B, Hkv, Nk, D); {shapes}."
        )
    Bk, Hkv, Nk, Dk = k.shape
    if Bk != B or Dk != D:
        raise AttentionInputError(
            f"{where}: q and k/v must agree on batch B and head dim D; {shapes}."
        )
    if Hkv == 0 or H % Hkv != 0:
        divisors = [d for d in range(1, H + 1) if H % d == 0]
        raise AttentionInputError(
            f"{where}: query heads H={H} must be a multiple of key/value heads Hkv={Hkv} "
            f"(GQA/MQA); valid Hkv for H={H}: {divisors}; {shapes}."
        )
    if not q.dtype == k.dtype == v.dtype or not q.is_floating_point():
        raise AttentionInputError(
            f"{where}: q, k, v must share one floating dtype; got {q.dtype}, {k.dtype}, {v.dtype}."
        )
    if not q.device == k.device == v.device:
        raise AttentionInputError(
            f"{where}: q, k, v must be on one device; got {q.device}, {k.device}, {v.device}."
        )
    if key_padding_mask is not None:
        if key_padding_mask.shape != (B, Nk) or key_padding_mask.dtype != torch.bool:
            raise AttentionInputError(
                f"{where}: key_padding_mask must be bool of shape (B, Nk) = ({B}, {Nk}), True "
                f"where a key may be attended; got {key_padding_mask.dtype} "
                f"{tuple(key_padding_mask.shape)}."
            )
        if key_padding_mask.device != q.device:
            raise AttentionInputError(
                f"{where}: key_padding_mask is on {key_padding_mask.device}, q on {q.device}."
            )
    if bias is not None:
        Nq = q.shape[2]
        broadcastable = bias.ndim <= 4 and all(
            b in (1, n) for b, n in zip(bias.shape[::-1], (Nk, Nq, H, B), strict=False)
        )
        if not broadcastable or not bias.is_floating_point():
            raise AttentionInputError(
                f"{where}: bias must be a float tensor broadcastable to (B, H, Nq, Nk) = "
                f"({B}, {H}, {Nq}, {Nk}), e.g. (1, H, Nq, Nk) for ALiBi; got {bias.dtype} "
                f"{tuple(bias.shape)}."
            )
        if bias.device != q.device:
            raise AttentionInputError(f"{where}: bias is on {bias.device}, q on {q.device}.")
