"""The transformer stack every model family shares: token embedding -> positional.embed ->
n_layers x Block -> final norm. GPT is one with causal self-attention and an LM head; BERT one
with bidirectional attention and a masked-LM head; the encoder-decoder holds two, the decoder's
blocks with cross-attention to the encoder's output.

The stack builds its modules in one fixed order (embedding, positional, blocks, norm), so a seed
gives every family GPT-2's initial weights, and GPT the same weights as before the families
shared this code.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from nima.contracts import Attention
from nima.errors import ConfigError
from nima.models.blocks import AttentionLayer, Block, GeluMLP, LayerNorm
from nima.models.cache import KVCache
from nima.models.positional import Positional


class TransformerStack(nn.Module):
    """Token embedding, positional plugin, `n_layers` pre-norm blocks and the final norm.

    causal: each position sees only the ones before it (decoder) or every one (encoder).
    cross: each block also attends to a `memory` (B, M, d_model), the encoder's output.
    """

    def __init__(
        self,
        vocab_size: int,
        context_length: int,
        d_model: int,
        n_layers: int,
        n_heads: int,
        n_kv_heads: int | None,
        mlp_ratio: float,
        dropout: float,
        bias: bool,
        attention: Attention | None,
        positional: Callable[..., Positional] | None,
        norm: Callable[..., nn.Module] | None,
        mlp: Callable[..., nn.Module] | None,
        *,
        causal: bool,
        cross: bool = False,
        family: str = "GPT",
    ) -> None:
        super().__init__()
        if attention is None or positional is None:
            raise ConfigError(
                f"{family} needs an attention plugin instance and a positional plugin factory, "
                f"e.g. {family}.attention = @attention.sdpa() and "
                f"{family}.positional = @positional.rope"
            )
        if d_model % n_heads:
            raise ConfigError(f"d_model={d_model} must be divisible by n_heads={n_heads}")
        n_kv_heads = n_kv_heads or n_heads
        if n_heads % n_kv_heads:
            raise ConfigError(f"n_heads={n_heads} must be a multiple of n_kv_heads={n_kv_heads}")
        norm, mlp = norm or LayerNorm, mlp or GeluMLP
        self.vocab_size, self.context_length = vocab_size, context_length
        self.causal = causal  # False: a position reads the ones after it too (fill needs it)
        self.n_kv_heads, self.head_dim = n_kv_heads, d_model // n_heads

        self.token_embedding = nn.Embedding(vocab_size, d_model)
        self.positional = positional(
            d_model=d_model, n_heads=n_heads, head_dim=self.head_dim, max_len=context_length
        )
        residual_std = 0.02 / math.sqrt(2 * n_layers)  # GPT-2: n_layers blocks x 2 residual adds
        hidden = int(mlp_ratio * d_model)

        def attention_layer(is_cross: bool) -> AttentionLayer:  # each its own plugin copy
            return AttentionLayer(
                d_model, n_heads, n_kv_heads, copy.deepcopy(attention),
                causal=causal and not is_cross, cross=is_cross, bias=bias,
                residual_std=residual_std,
            )  # fmt: skip

        def block() -> Block:  # each layer its own modules, its own copies of the attention plugin
            attn = attention_layer(False)
            ff = mlp(
                d_model=d_model, hidden=hidden, bias=bias, dropout=dropout,
                residual_std=residual_std,
            )  # fmt: skip
            cross_attn = attention_layer(True) if cross else None
            return Block(d_model, attn=attn, mlp=ff, norm=norm, bias=bias, dropout=dropout,
                         cross=cross_attn)  # fmt: skip

        self.blocks = nn.ModuleList(block() for _ in range(n_layers))
        self.norm = norm(d_model=d_model, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def reset_parameters(self) -> None:
        """GPT-2 init of the stack's own modules, in module order (the plugins keep theirs)."""
        nn.init.normal_(self.token_embedding.weight, mean=0.0, std=0.02)
        for block in self.blocks:
            block.reset_parameters()
        self.norm.reset_parameters()

    def hidden(
        self,
        idx: torch.Tensor,
        *,
        positions: torch.Tensor | None = None,
        cache: KVCache | None = None,
        key_padding_mask: torch.Tensor | None = None,
        last_only: bool = False,
        memory: torch.Tensor | None = None,
        memory_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """idx (B, N) -> final hidden states (B, N, d_model), or (B, 1, d_model) with last_only.

        positions: (N,) or (B, N) integers; by default 0..N-1, continuing after the cached ones.
        cache: a KVCache from new_cache; idx then continues the cached sequences.
        key_padding_mask: bool (B, N), False at padding tokens of idx (cached tokens keep theirs).
        memory (B, M, d_model), memory_mask bool (B, M): what cross-attention reads (cross only).
        """
        B, N = idx.shape
        start = 0 if cache is None else cache.length
        if positions is None:
            positions = torch.arange(start, start + N, device=idx.device)  # (N,)
        k_positions, key_mask = positions, key_padding_mask  # every key: these, or the cache's
        if cache is not None:
            k_positions, key_mask = cache.append(positions, key_padding_mask, N)  # (B, Nk) each
        # Once per forward, shared by every layer (RoPE: cos/sin; ALiBi: the bias); no host sync.
        angles = self.positional.prepare(positions)
        bias = self.positional.bias(positions, k_positions)  # (B or 1, H, N, Nk) or None
        x = self.token_embedding(idx)  # (B, N, d_model)
        x = self.dropout(self.positional.embed(x, angles))
        for i, block in enumerate(self.blocks):
            cross_cache = cache.cross_layer(i) if cache is not None and block.has_cross else None
            x = block(
                x,
                memory=memory,
                memory_mask=memory_mask,
                cross_cache=cross_cache,  # the memory's keys and values, once projected
                positional=self.positional,
                angles=angles,
                key_padding_mask=key_mask,
                bias=bias,
                cache=None if cache is None else cache.layer(i),
            )  # (B, N, d_model); fmt: skip
        if last_only:
            x = x[:, -1:]  # (B, 1, d_model)
        return self.norm(x)  # (B, N or 1, d_model)

    def new_cache(
        self,
        batch_size: int,
        max_len: int | None = None,
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> KVCache:
        """An empty KV cache for batch_size sequences of up to max_len (context_length) positions.

        dtype and device default to the parameters'; under autocast pass the compute dtype.
        """
        weight = self.token_embedding.weight
        return KVCache(
            len(self.blocks), batch_size, self.n_kv_heads, self.head_dim,
            max_len or self.context_length, dtype=dtype or weight.dtype,
            device=device or weight.device,
        )  # fmt: skip

    def plugins(self) -> Iterator[tuple[str, Any]]:
        """(family, instance) for every plugin this stack runs, each layer's own: what the
        capability check before training inspects."""
        yield "positional", self.positional
        for block in self.blocks:
            yield "norm", block.norm1
            yield "attention", block.attn.attention
            if block.has_cross:
                yield "norm", block.norm_cross
                yield "attention", block.cross.attention
            yield "norm", block.norm2
            yield "mlp", block.mlp
        yield "norm", self.norm

    @property
    def attention(self) -> Any:
        """The first layer's attention plugin instance (each layer holds its own copy)."""
        return self.blocks[0].attn.attention

    def num_parameters(self, non_embedding: bool = True) -> int:
        """Parameter count; non-embedding excludes the token embedding (and a tied head), as
        nanoGPT counts."""
        n = sum(p.numel() for p in self.parameters())
        return n - self.token_embedding.weight.numel() if non_embedding else n
