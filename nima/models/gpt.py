"""GPT: a decoder-only transformer whose attention kernel and positional encoding are plugins.

idx (B, N) -> token embedding -> positional.embed -> n_layers x Block -> norm -> lm_head
Block: x + attn(norm(x)), then x + mlp(norm(x))          (pre-norm, as GPT-2)

Init is GPT-2's, and each module owns its part (`reset_parameters`): weights N(0, 0.02), the two
projections that write into the residual stream (attention's and the MLP's output) scaled by
1/sqrt(2 * n_layers), biases 0. Plugins (attention, positional) initialise their own parameters;
the model never touches them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Annotated, Any

import torch
import torch.nn.functional as F
from torch import nn

from nima.contracts import Attention
from nima.errors import ConfigError
from nima.models.positional import Positional
from nima.validation import Range, checked


def _init_linear(linear: nn.Linear, std: float) -> None:
    nn.init.normal_(linear.weight, mean=0.0, std=std)
    if linear.bias is not None:
        nn.init.zeros_(linear.bias)


class SelfAttention(nn.Module):
    """Multi-head (or grouped-query) causal self-attention around an attention plugin.

    residual_std: init std of the output projection, which writes into the residual stream.
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        n_kv_heads: int,
        attention: Any,
        bias: bool,
        residual_std: float = 0.02,
    ):
        super().__init__()
        self.n_heads, self.n_kv_heads = n_heads, n_kv_heads
        self.head_dim = d_model // n_heads
        self.residual_std = residual_std
        self.qkv = nn.Linear(d_model, (n_heads + 2 * n_kv_heads) * self.head_dim, bias=bias)
        self.proj = nn.Linear(d_model, d_model, bias=bias)
        self.attention = attention  # the plugin: its parameters, if any, are its own

    def reset_parameters(self) -> None:
        _init_linear(self.qkv, 0.02)
        _init_linear(self.proj, self.residual_std)

    def forward(self, x: torch.Tensor, positions: Any, positional: Positional) -> torch.Tensor:
        """x (B, N, C); positions: what positional.prepare gave for this forward."""
        B, N, C = x.shape
        H, Hkv, D = self.n_heads, self.n_kv_heads, self.head_dim
        q, k, v = self.qkv(x).split([H * D, Hkv * D, Hkv * D], dim=-1)
        q = q.view(B, N, H, D).transpose(1, 2)  # (B, H, N, D)
        k = k.view(B, N, Hkv, D).transpose(1, 2)  # (B, Hkv, N, D)
        v = v.view(B, N, Hkv, D).transpose(1, 2)  # (B, Hkv, N, D)
        q, k = positional.rotate(q, k, positions)
        y = self.attention(q, k, v, causal=True)  # (B, H, N, D)
        return self.proj(y.transpose(1, 2).reshape(B, N, C))


class MLP(nn.Module):
    """fc -> GELU -> proj; proj writes into the residual stream (init std residual_std)."""

    def __init__(
        self, d_model: int, hidden: int, bias: bool, dropout: float, residual_std: float = 0.02
    ):
        super().__init__()
        self.residual_std = residual_std
        self.fc = nn.Linear(d_model, hidden, bias=bias)
        self.proj = nn.Linear(hidden, d_model, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def reset_parameters(self) -> None:
        _init_linear(self.fc, 0.02)
        _init_linear(self.proj, self.residual_std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.proj(F.gelu(self.fc(x))))


class Block(nn.Module):
    def __init__(self, d_model, n_heads, n_kv_heads, mlp_ratio, attention, bias, dropout, n_layers):
        super().__init__()
        residual_std = 0.02 / math.sqrt(2 * n_layers)  # GPT-2: n_layers blocks x 2 residual adds
        self.norm1 = nn.LayerNorm(d_model, bias=bias)
        self.attn = SelfAttention(d_model, n_heads, n_kv_heads, attention, bias, residual_std)
        self.norm2 = nn.LayerNorm(d_model, bias=bias)
        self.mlp = MLP(d_model, int(mlp_ratio * d_model), bias, dropout, residual_std)
        self.dropout = nn.Dropout(dropout)

    def reset_parameters(self) -> None:
        self.norm1.reset_parameters()
        self.attn.reset_parameters()
        self.norm2.reset_parameters()
        self.mlp.reset_parameters()

    def forward(self, x: torch.Tensor, positions: Any, positional: Positional) -> torch.Tensor:
        x = x + self.dropout(self.attn(self.norm1(x), positions, positional))
        return x + self.mlp(self.norm2(x))


Size = Annotated[int, Range(ge=1)]


@checked  # gin bindings and Python calls alike are checked against these annotations
class GPT(nn.Module):
    """Decoder-only transformer (GPT-2 layout) built from an attention and a positional plugin."""

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
        attention: Attention | None = None,  # an instance: @attention.sdpa()
        positional: Callable[..., Positional] | None = None,  # a factory: @positional.rope
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
        self.vocab_size, self.context_length = vocab_size, context_length
        self.head_dim = d_model // n_heads
        self.attention = attention  # not a Module in general: kept for capability checks

        self.token_embedding = nn.Embedding(vocab_size, d_model)
        self.positional = positional(
            d_model=d_model, n_heads=n_heads, head_dim=self.head_dim, max_len=context_length
        )
        self.blocks = nn.ModuleList(
            Block(d_model, n_heads, n_kv_heads, mlp_ratio, attention, bias, dropout, n_layers)
            for _ in range(n_layers)
        )
        self.norm = nn.LayerNorm(d_model, bias=bias)
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
        targets: torch.Tensor | None = None,
        positions: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """idx (B, N) -> logits (B, N, vocab); loss (mean cross-entropy) when targets are given."""
        B, N = idx.shape
        if positions is None:
            positions = torch.arange(N, device=idx.device)  # (N,)
        # Once per forward, shared by every layer (RoPE: cos/sin); no host sync.
        prepared = self.positional.prepare(positions)
        x = self.token_embedding(idx)  # (B, N, d_model)
        x = self.dropout(self.positional.embed(x, prepared))
        for block in self.blocks:
            x = block(x, prepared, self.positional)
        logits = self.lm_head(self.norm(x))  # (B, N, vocab)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())
        return logits, loss

    def num_parameters(self, non_embedding: bool = True) -> int:
        """Parameter count; non-embedding excludes the token embedding (and a tied head), as nanoGPT."""
        n = sum(p.numel() for p in self.parameters())
        return n - self.token_embedding.weight.numel() if non_embedding else n
