"""Seq2Seq: the original encoder-decoder transformer (Vaswani et al. 2017, pre-norm), built from
the same stack, blocks and plugins as GPT.

source (B, S) -> encoder (bidirectional, padding masked) -> memory (B, S, d_model)
idx (B, N) -> decoder (causal self-attention, then cross-attention to memory) -> lm_head -> logits

One token embedding serves the encoder, the decoder and (tied) the head: source and target share
a vocabulary. Training is teacher forcing (objective.seq2seq): the decoder reads the target
shifted right behind a start token. Decoding has GPT's interface: the memory is computed once and
kept in the cache with each cross-attention layer's keys and values (projected at the first
step), the decoder's self-attention keys and values are cached as GPT's. `conditioned(source)`
gives the decoder with its memory as a decoder-only model, which the generation engine drives
unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Annotated, Any

import torch
from torch import nn

from nima.contracts import Attention
from nima.errors import ConfigError
from nima.models.cache import KVCache
from nima.models.positional import Positional
from nima.models.stack import TransformerStack
from nima.validation import Range, checked

Size = Annotated[int, Range(ge=1)]


class CrossSlot:
    """One decoder layer's cross-attention keys and values in a Seq2SeqCache (None until the
    first forward projects them from the memory)."""

    def __init__(self, owner: Seq2SeqCache, index: int) -> None:
        self.owner, self.index = owner, index

    @property
    def memory_kv(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        return self.owner.memory_kv[self.index]

    @memory_kv.setter
    def memory_kv(self, kv: tuple[torch.Tensor, torch.Tensor]) -> None:
        self.owner.memory_kv[self.index] = kv


class Seq2SeqCache(KVCache):
    """The decoder's KV cache plus what it attends to: the encoder's memory (B, S, d_model), its
    padding mask (B, S), and each layer's projected memory keys and values."""

    def __init__(self, *args: Any, memory: torch.Tensor, memory_mask: torch.Tensor | None,
                 **kwargs: Any) -> None:  # fmt: skip
        super().__init__(*args, **kwargs)
        self.memory, self.memory_mask = memory, memory_mask
        self.memory_kv: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * len(self.keys)

    def cross_layer(self, index: int) -> CrossSlot:
        return CrossSlot(self, index)

    def reorder(self, batch_index: torch.Tensor) -> None:
        """Row i continues row batch_index[i] (beam search): its memory too."""
        super().reorder(batch_index)
        self.memory = self.memory.index_select(0, batch_index)
        if self.memory_mask is not None:
            self.memory_mask = self.memory_mask.index_select(0, batch_index)
        self.memory_kv = [
            None if kv is None else tuple(t.index_select(0, batch_index) for t in kv)
            for kv in self.memory_kv
        ]


def source_window(ids: Sequence[int], context: int) -> list[int]:
    """The source tokens the encoder reads: the first `context` (a longer question loses its
    end), the same in training (objective.seq2seq) and when answering (the generation engine)."""
    return list(ids[:context])


@checked
class Seq2Seq(nn.Module):
    """Encoder-decoder transformer (Vaswani et al. 2017, pre-norm) from the same plugins as GPT."""

    def __init__(
        self,
        vocab_size: Size,
        context_length: Size = 256,
        d_model: Size = 128,
        n_layers: Size = 3,  # encoder blocks
        n_decoder_layers: Size | None = None,  # None: as many as the encoder
        n_heads: Size = 8,
        n_kv_heads: Size | None = None,
        mlp_ratio: Annotated[float, Range(gt=0)] = 4.0,
        dropout: Annotated[float, Range(ge=0, lt=1)] = 0.0,
        bias: bool = False,
        tie_embeddings: bool = True,
        attention: Attention | None = None,  # an instance: @attention.sdpa(), one copy per layer
        positional: Callable[..., Positional] | None = None,  # a factory: @positional.rope
        norm: Callable[..., nn.Module] | None = None,  # a factory (None: layernorm)
        mlp: Callable[..., nn.Module] | None = None,  # a factory (None: gelu)
    ):
        super().__init__()
        shared = (vocab_size, context_length, d_model)
        parts = (n_heads, n_kv_heads, mlp_ratio, dropout, bias, attention, positional, norm, mlp)
        self.encoder = TransformerStack(*shared, n_layers, *parts, causal=False, family="Seq2Seq")
        self.decoder = TransformerStack(*shared, n_decoder_layers or n_layers, *parts,
                                        causal=True, cross=True, family="Seq2Seq")  # fmt: skip
        self.decoder.token_embedding = self.encoder.token_embedding  # one shared vocabulary
        self.lm_head = nn.Linear(d_model, vocab_size, bias=False)
        if tie_embeddings:
            self.lm_head.weight = self.encoder.token_embedding.weight
        self.vocab_size, self.context_length = vocab_size, context_length
        self.head_dim = self.decoder.head_dim
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """GPT-2's init for both stacks (see nima.models.stack), the head N(0, 0.02)."""
        self.encoder.reset_parameters()
        self.decoder.reset_parameters()
        if self.lm_head.weight is not self.encoder.token_embedding.weight:
            nn.init.normal_(self.lm_head.weight, mean=0.0, std=0.02)

    def encode(self, source: torch.Tensor, source_mask: torch.Tensor | None = None) -> torch.Tensor:
        """source (B, S) -> memory (B, S, d_model); source_mask bool (B, S), False at padding."""
        return self.encoder.hidden(source, key_padding_mask=source_mask)

    def forward(
        self,
        idx: torch.Tensor,
        *,
        source: torch.Tensor | None = None,
        source_mask: torch.Tensor | None = None,
        memory: torch.Tensor | None = None,
        positions: torch.Tensor | None = None,
        cache: Seq2SeqCache | None = None,
        key_padding_mask: torch.Tensor | None = None,
        last_only: bool = False,
    ) -> torch.Tensor:
        """idx (B, N) decoder tokens -> logits (B, N, vocab), or (B, 1, vocab) with last_only.

        What the decoder attends to: `source` (B, S) encoded now (source_mask (B, S) False at
        padding), or `memory` (B, S, d_model) from `encode`, or the one a cache holds (then the
        other arguments are GPT's: positions, cache, key_padding_mask of idx, last_only).
        """
        if memory is None and source is not None:
            memory = self.encode(source, source_mask)
        elif memory is None and cache is not None:
            memory, source_mask = cache.memory, cache.memory_mask
        if memory is None:
            raise ConfigError(
                "Seq2Seq's decoder needs what it attends to: pass source= (token ids), memory= "
                "(model.encode(source)), or a cache made by new_cache(..., memory=...)."
            )
        x = self.decoder.hidden(
            idx,
            positions=positions,
            cache=cache,
            key_padding_mask=key_padding_mask,
            last_only=last_only,
            memory=memory,
            memory_mask=source_mask,
        )  # (B, N or 1, d_model)
        return self.lm_head(x)  # (B, N or 1, vocab)

    def new_cache(
        self,
        batch_size: int,
        max_len: int | None = None,
        *,
        memory: torch.Tensor | None = None,
        memory_mask: torch.Tensor | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> Seq2SeqCache:
        """The decoder's KV cache for batch_size sequences, holding the encoder's memory
        (B, S, d_model) and its padding mask, from `encode`. batch_size may be k x B (beam
        search: rows b*k .. b*k + k-1 continue source b), the memory then repeated so."""
        if memory is None or batch_size % memory.shape[0]:
            raise ConfigError(
                "Seq2Seq.new_cache needs the encoder's memory for the batch (or for every k-th "
                "row of it): new_cache(B, memory=model.encode(source), memory_mask=...), "
                "memory (B, S, d_model)."
            )
        if (k := batch_size // memory.shape[0]) > 1:
            memory = memory.repeat_interleave(k, dim=0)
            memory_mask = None if memory_mask is None else memory_mask.repeat_interleave(k, dim=0)
        weight = self.lm_head.weight
        return Seq2SeqCache(
            len(self.decoder.blocks), batch_size, self.decoder.n_kv_heads, self.head_dim,
            max_len or self.context_length, dtype=dtype or weight.dtype,
            device=device or weight.device, memory=memory, memory_mask=memory_mask,
        )  # fmt: skip

    def conditioned(
        self, source: torch.Tensor, source_mask: torch.Tensor | None = None
    ) -> Conditioned:
        """The decoder conditioned on `source` (B, S): a decoder-only model for generation."""
        return Conditioned(self, self.encode(source, source_mask), source_mask)

    def plugins(self) -> Iterator[tuple[str, Any]]:
        """(family, instance) for every plugin both stacks run, each layer's own."""
        yield from self.encoder.plugins()
        yield from self.decoder.plugins()

    @property
    def attention(self) -> Any:
        return self.encoder.attention

    def num_parameters(self, non_embedding: bool = True) -> int:
        """Parameter count; non-embedding excludes the shared token embedding (and tied head)."""
        n = sum(p.numel() for p in self.parameters())
        return n - self.encoder.token_embedding.weight.numel() if non_embedding else n


class Conditioned:
    """A Seq2Seq decoder with its memory: GPT's decoding interface (context_length, new_cache,
    forward with positions/cache/key_padding_mask/last_only), so a decoder-only generation
    engine drives it unchanged. The memory was computed once; the cache carries it."""

    def __init__(self, model: Seq2Seq, memory: torch.Tensor, memory_mask: torch.Tensor | None):
        self.model, self.memory, self.memory_mask = model, memory, memory_mask
        self.context_length = model.context_length

    def parameters(self) -> Iterator[nn.Parameter]:
        return self.model.parameters()

    def new_cache(
        self, batch_size: int, max_len: int | None = None, **options: Any
    ) -> Seq2SeqCache:
        return self.model.new_cache(batch_size, max_len, memory=self.memory,
                                    memory_mask=self.memory_mask, **options)  # fmt: skip

    def __call__(self, idx: torch.Tensor, *, cache: Seq2SeqCache | None = None, **options: Any):
        if cache is not None:  # the memory (and its keys and values) come from the cache
            return self.model(idx, cache=cache, **options)
        return self.model(idx, memory=self.memory, source_mask=self.memory_mask, **options)

    def eval(self) -> Conditioned:
        self.model.eval()
        return self

    def train(self, mode: bool = True) -> Conditioned:
        self.model.train(mode)
        return self

    @property
    def training(self) -> bool:
        return self.model.training
