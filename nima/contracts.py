"""The plugin contracts, as typing Protocols: what the core calls on each family's instances.

A plugin need not inherit from these; it must only behave as they say. `nima.testing` checks
behaviour against each family's reference implementation.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch


@runtime_checkable
class Attention(Protocol):
    """attention: `attn(q, k, v, causal=..)` with q (B, H, Nq, D), k and v (B, Hkv, Nk, D).

    H % Hkv == 0 (GQA/MQA). When causal and Nq != Nk the queries are the LAST Nq positions:
    query i sees keys j <= i + Nk - Nq (bottom-right alignment). key_padding_mask is bool
    (B, Nk), True where a key may be attended. A query with no visible key returns zeros (and
    zero gradients), never NaN. Returns (B, H, Nq, D) in q's dtype.
    """

    def __call__(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        *,
        causal: bool,
        scale: float | None = None,
        key_padding_mask: torch.Tensor | None = None,
    ) -> torch.Tensor: ...


def visible_keys(
    n_q: int,
    n_k: int,
    *,
    causal: bool,
    key_padding_mask: torch.Tensor | None,
    device: torch.device,
) -> torch.Tensor | None:
    """bool (B or 1, 1, Nq, Nk): True where query i may attend key j; None if all are visible.

    The visibility the Attention contract defines, for plugin authors to reuse: causal queries
    are the last Nq of Nk positions (query i sees keys j <= i + Nk - Nq); key_padding_mask is
    bool (B, Nk), True where a key may be attended.
    """
    visible = None
    if causal:
        i = torch.arange(n_q, device=device)[:, None]
        j = torch.arange(n_k, device=device)[None, :]
        visible = (j <= i + (n_k - n_q))[None, None]  # (1, 1, Nq, Nk), bottom-right aligned
    if key_padding_mask is not None:
        keys = key_padding_mask[:, None, None, :]  # (B, 1, 1, Nk)
        visible = keys if visible is None else visible & keys
    return visible


@runtime_checkable
class Positional(Protocol):
    """positional: an nn.Module built as `factory(d_model=, n_heads=, head_dim=, max_len=)`.

    The model calls both points; a plugin that does not act at one returns its input unchanged
    (subclass nima.models.positional.Positional for those identity defaults):
      embed(x (B, N, d_model), positions (B, N) or (N,)) -> x      token embeddings
      rotate(q (B, H, N, D), k (B, Hkv, N, D), positions) -> q, k  queries and keys
    Positions are explicit so KV-cache decoding and packed sequences work. (An attention-bias
    point, for ALiBi, arrives with the attention contract's bias argument.)
    """

    def embed(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor: ...

    def rotate(
        self, q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]: ...


@runtime_checkable
class Tokenizer(Protocol):
    """tokenizer: trained on text, saved to and loaded from one versioned JSON file.

    `pad_id`, `unk_id`, `sos_id` and `eos_id` are the ids of the special tokens holding those
    roles, or None where the tokenizer has none (GPT-2's tokenizer.json has only
    `<|endoftext|>`, its eos and sos: no pad, no unk). A caller that needs one checks for None.
    """

    vocab_size: int
    pad_id: int | None
    unk_id: int | None
    sos_id: int | None
    eos_id: int | None

    def train(self, texts: str | Iterable[str]) -> None: ...

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]: ...

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str: ...

    def encode_batch(self, texts: Sequence[str], **options: Any) -> Any: ...

    def save(self, path: str | Path) -> None: ...

    @classmethod
    def load(cls, path: str | Path) -> Tokenizer: ...


@runtime_checkable
class Sampler(Protocol):
    """sampler: a logits processor `(logits (B, V)) -> logits`, or a selector (see nima.generate)."""

    def __call__(self, logits: torch.Tensor) -> torch.Tensor: ...


@runtime_checkable
class Dataset(Protocol):
    """dataset: raw text per split and a checksum of its source (for caches and run records)."""

    def splits(self) -> dict[str, str]: ...

    def checksum(self) -> str: ...
