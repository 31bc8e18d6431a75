"""Softcap attention written out independently and naively (K/V repeated per query head, an
explicit mask): what NIMA's conformance kit compares attention.softcap with, declared as the
plugin's `reference` capability (plain attention.reference would differ by the cap)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch


def softcap_reference(cap: float | None) -> Callable[..., torch.Tensor]:
    """The attention function cap * tanh(q k^T * scale / cap) (+ bias) -> masked softmax -> @ v."""

    def attn(q, k, v, *, causal, scale=None, key_padding_mask=None, bias=None):
        group = q.shape[1] // k.shape[1]
        k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
        n_q, n_k = q.shape[2], k.shape[2]
        scale = q.shape[-1] ** -0.5 if scale is None else scale
        scores = q @ k.transpose(-2, -1) * scale  # (B, H, Nq, Nk)
        if cap is not None:
            scores = torch.tanh(scores / cap) * cap
        if bias is not None:
            scores = scores + bias  # after the cap
        visible = torch.ones(q.shape[0], 1, n_q, n_k, dtype=torch.bool, device=q.device)
        if causal:
            visible &= torch.ones(n_q, n_k, dtype=torch.bool, device=q.device).tril(n_k - n_q)
        if key_padding_mask is not None:
            visible &= key_padding_mask[:, None, None, :]
        probs = scores.masked_fill(~visible, -1e30).softmax(dim=-1) * visible
        return probs @ v

    return attn


def reference_for(attn: Any) -> Callable[..., torch.Tensor]:
    """The `reference` capability: the formula with this instance's cap."""
    return softcap_reference(attn.cap)
