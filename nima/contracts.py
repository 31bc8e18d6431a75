"""The plugin contracts, as typing Protocols: what the core calls on each family's instances.

A plugin need not inherit from these; it must only behave as they say. `nima.testing` checks
behaviour against each family's reference implementation.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch


@runtime_checkable
class Attention(Protocol):
    """attention: `attn(q, k, v, causal=..)` with q (B, H, Nq, D), k and v (B, Hkv, Nk, D).

    H % Hkv == 0 (GQA/MQA). When causal and Nq != Nk the queries are the LAST Nq positions:
    query i sees keys j <= i + Nk - Nq (bottom-right alignment, which is what lets a KV cache
    decode through any plugin unchanged). key_padding_mask is bool (B, Nk), True where a key may
    be attended. bias is an additive float tensor broadcastable to (B, H, Nq, Nk), added to the
    scaled scores before the softmax (ALiBi, relative position biases); a plugin that supports it
    declares the capability `bias: True`, one that does not raises on a bias it is given. A query
    with no visible key returns zeros (and zero gradients), never NaN. Returns (B, H, Nq, D) in
    q's dtype.
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
        bias: torch.Tensor | None = None,
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

    Per forward the model calls, in this order (subclass nima.models.positional.Positional for
    identity defaults at the points a plugin does not act at):
      prepared = prepare(positions (N,) or (B, N))   once: per-forward tables (RoPE's cos/sin)
      embed(x (B, N, d_model), prepared) -> x          once, on the token embeddings
      bias(q_positions, k_positions) -> None | (B or 1, H, Nq, Nk) float
                                                       once: an additive attention bias (ALiBi)
      rotate(q (B, H, N, D), k (B, Hkv, N, D), prepared) -> q, k   in every layer
    Positions are explicit integer tensors so KV-cache decoding (key positions come from the
    cache) and packed sequences work. No point may read position values on the host (no
    `.item()`): the model makes no device-to-host sync in a forward.
    """

    def prepare(self, positions: torch.Tensor) -> Any: ...

    def embed(self, x: torch.Tensor, positions: Any) -> torch.Tensor: ...

    def bias(self, q_positions: torch.Tensor, k_positions: torch.Tensor) -> torch.Tensor | None: ...

    def rotate(
        self, q: torch.Tensor, k: torch.Tensor, positions: Any
    ) -> tuple[torch.Tensor, torch.Tensor]: ...


@runtime_checkable
class Norm(Protocol):
    """norm: an nn.Module built as `factory(d_model=, bias=)`; (..., d_model) -> (..., d_model).

    Owns its init (`reset_parameters`). `bias` is the model's choice of additive biases; a norm
    that has none by definition (rmsnorm) ignores it.
    """

    def __call__(self, x: torch.Tensor) -> torch.Tensor: ...

    def reset_parameters(self) -> None: ...


@runtime_checkable
class MLP(Protocol):
    """mlp: an nn.Module built as `factory(d_model=, hidden=, bias=, dropout=, residual_std=)`.

    (B, N, d_model) -> (B, N, d_model). Owns its init (`reset_parameters`): its output projection
    writes into the residual stream and is initialised with std `residual_std` (GPT-2's
    0.02 / sqrt(2 * n_layers)), every other weight with std 0.02.
    """

    def __call__(self, x: torch.Tensor) -> torch.Tensor: ...

    def reset_parameters(self) -> None: ...


@runtime_checkable
class Model(Protocol):
    """model: an nn.Module built as `factory(vocab_size=...)` that returns logits.

    forward(idx (B, N), *, positions=None, cache=None, key_padding_mask=None, last_only=False)
    -> logits (B, N, vocab), or (B, 1, vocab) with last_only. With a cache from
    `new_cache(batch_size, max_len=None)`, idx continues the cached sequences (prefill or
    decode). `plugins()` yields (family, instance) for every plugin instance the model runs,
    each layer's own: the capability check before training walks it. The loss is the training
    objective's (nima.train.objectives), not the model's.
    """

    context_length: int

    def __call__(
        self,
        idx: torch.Tensor,
        *,
        positions: torch.Tensor | None = None,
        cache: Any = None,
        key_padding_mask: torch.Tensor | None = None,
        last_only: bool = False,
    ) -> torch.Tensor: ...

    def new_cache(self, batch_size: int, max_len: int | None = None) -> Any: ...

    def plugins(self) -> Iterator[tuple[str, Any]]: ...

    def num_parameters(self, non_embedding: bool = True) -> int: ...


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
    """sampler: a logits processor `(ids (B, N), logits (B, V)) -> logits (B, V)` (ids: each
    row's tokens so far; a ruled-out token gets -inf), or a selector that also has
    `select(logits, rng) -> ids (B,)` (see nima.generate). `nima.testing` checks the `rule` a
    sampler declares (temperature, top_k, top_p, min_p, greedy)."""

    def __call__(self, ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor: ...


@runtime_checkable
class Dataset(Protocol):
    """dataset: raw text per split and a checksum of its source (for caches and run records)."""

    def splits(self) -> dict[str, str]: ...

    def checksum(self) -> str: ...


@runtime_checkable
class Objective(Protocol):
    """objective: how token ids become batches and a batch a loss, so the trainer names none
    (see nima.train.objectives for each method); gin takes an instance."""

    scores_every_token: bool

    def prepare(self, data: Any, dataset: Any = None) -> dict[str, Any]: ...

    def batches(self, split: Any, **options: Any) -> Any: ...

    def full_split(self, split: Any, **options: Any) -> list[Any]: ...

    def loss(self, model: torch.nn.Module, batch: Any) -> torch.Tensor: ...

    def measure(self, model: torch.nn.Module, batch: Any) -> dict[str, tuple[float, int]]: ...

    def tokens(self, batch: Any) -> int: ...
