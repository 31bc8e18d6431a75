"""GPT: a decoder-only transformer whose every part is a plugin, built from the shared blocks.

idx (B, N) -> token embedding -> positional.embed -> n_layers x Block -> norm -> lm_head -> logits
Block: x + attn(norm(x)), then x + mlp(norm(x))          (pre-norm, as GPT-2)

Plugins: attention (an instance, copied into each layer, so each layer owns its own), positional,
norm and mlp (factories the model calls with its sizes). The model returns logits; the loss is the
training objective's (nima.train.objectives). With a KV cache (`new_cache`), a forward continues
the cached sequence: a prompt is prefilled in one call, then tokens are decoded one at a time.

Init is GPT-2's, and each module owns its part (`reset_parameters`, see nima.models.blocks):
weights N(0, 0.02), the two projections that write into the residual stream scaled by
1/sqrt(2 * n_layers), biases 0, norm gains 1. The positional and attention plugins initialise
their own parameters; the model never touches them.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator
from typing import Annotated, Any

import torch
from torch import nn

from nima.contracts import Attention
from nima.errors import ConfigError
from nima.models.blocks import AttentionLayer, Block, GeluMLP, LayerNorm
from nima.models.cache import KVCache
from nima.models.positional import Positional
from nima.validation import Range, checked

Size = Annotated[int, Range(ge=1)]


@checked  # gin bindings and Python calls alike are checked against these annotations
class GPT(nn.Module):
    """Decoder-only transformer (GPT-2 layout) built from attention, positional, norm and mlp plugins."""

    def __init__(
        self,
        vocab_size: Size,
        context_length: Size = 256,
        d_model: Size = 128,
        n_layers: Size = 4,
        n_heads: Size = 8,
        n_kv_heads: Size | None = None,
        mlp_ratio: Annotated[float, Range(gt=0)] = 4.0,
        dropout: Annotated[float, Range(ge=0, lt=1)] = 0.0,
        bias: bool = False,
        tie_embeddings: bool = True,
        attention: Attention | None = None,  # an instance: @attention.sdpa(), one copy per layer
        positional: Callable[..., Positional] | None = None,  # a factory: @positional.rope
        norm: Callable[..., nn.Module] | None = None,  # a factory: @norm.layernorm (None: it)
        mlp: Callable[..., nn.Module] | None = None,  # a factory: @mlp.gelu (None: it)
    ):
        super().__init__()
        if attention is None or positional is None:
            raise ConfigError(
                "GPT needs an attention plugin instance and a positional plugin factory, e.g. "
                "GPT.attention = @attention.sdpa() and GPT.positional = @positional.rope"
            )
        if d_model % n_heads:
            raise ConfigError(f"d_model={d_model} must be divisible by n_heads={n_heads}")
        n_kv_heads = n_kv_heads or n_heads
        if n_heads % n_kv_heads:
            raise ConfigError(f"n_heads={n_heads} must be a multiple of n_kv_heads={n_kv_heads}")
        norm, mlp = norm or LayerNorm, mlp or GeluMLP
        self.vocab_size, self.context_length = vocab_size, context_length
        self.n_kv_heads, self.head_dim = n_kv_heads, d_model // n_heads

        self.token_embedding = nn.Embedding(vocab_size, d_model)
        self.positional = positional(
            d_model=d_model, n_heads=n_heads, head_dim=self.head_dim, max_len=context_length
        )
        residual_std = 0.02 / math.sqrt(2 * n_layers)  # GPT-2: n_layers blocks x 2 residual adds
        hidden = int(mlp_ratio * d_model)

        def block() -> Block:  # each layer its own modules, its own copy of the attention plugin
            attn = AttentionLayer(
                d_model, n_heads, n_kv_heads, copy.deepcopy(attention), causal=True, bias=bias,
                residual_std=residual_std,
            )  # fmt: skip
            ff = mlp(
                d_model=d_model, hidden=hidden, bias=bias, dropout=dropout,
                residual_std=residual_std,
            )  # fmt: skip
            return Block(d_model, attn=attn, mlp=ff, norm=norm, bias=bias, dropout=dropout)

        self.blocks = nn.ModuleList(block() for _ in range(n_layers))
        self.norm = norm(d_model=d_model, bias=bias)
        self.lm_head = nn.Linear(d_model, vocab_size, bias=False)
        self.dropout = nn.Dropout(dropout)
        if tie_embeddings:
            self.lm_head.weight = self.token_embedding.weight
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """GPT-2 init of the model's own modules, in module order (the plugins keep theirs).

        Run once after every module is built, so a seed gives the weights GPT-2's walk over
        the parameters gave.
        """
        nn.init.normal_(self.token_embedding.weight, mean=0.0, std=0.02)
        for block in self.blocks:
            block.reset_parameters()
        self.norm.reset_parameters()
        if self.lm_head.weight is not self.token_embedding.weight:
            nn.init.normal_(self.lm_head.weight, mean=0.0, std=0.02)

    def forward(
        self,
        idx: torch.Tensor,
        *,
        positions: torch.Tensor | None = None,
        cache: KVCache | None = None,
        key_padding_mask: torch.Tensor | None = None,
        last_only: bool = False,
    ) -> torch.Tensor:
        """idx (B, N) -> logits (B, N, vocab), or (B, 1, vocab) for the last position only.

        positions: (N,) or (B, N) integers; by default 0..N-1, continuing after the cached ones.
        cache: a KVCache from new_cache; idx then continues the cached sequences.
        key_padding_mask: bool (B, N), False at padding tokens of idx (cached tokens keep theirs).
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
            x = block(
                x,
                positional=self.positional,
                angles=angles,
                key_padding_mask=key_mask,
                bias=bias,
                cache=None if cache is None else cache.layer(i),
            )  # (B, N, d_model); fmt: skip
        if last_only:
            x = x[:, -1:]  # (B, 1, d_model)
        return self.lm_head(self.norm(x))  # (B, N or 1, vocab)

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
        """(family, instance) for every plugin this model runs, each layer's own: what the
        capability check before training inspects."""
        yield "positional", self.positional
        for block in self.blocks:
            yield "norm", block.norm1
            yield "attention", block.attn.attention
            yield "norm", block.norm2
            yield "mlp", block.mlp
        yield "norm", self.norm

    @property
    def attention(self) -> Any:
        """The first layer's attention plugin instance (each layer holds its own copy)."""
        return self.blocks[0].attn.attention

    def num_parameters(self, non_embedding: bool = True) -> int:
        """Parameter count; non-embedding excludes the token embedding (and a tied head), as nanoGPT."""
        n = sum(p.numel() for p in self.parameters())
        return n - self.token_embedding.weight.numel() if non_embedding else n
