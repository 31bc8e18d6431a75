"""GPT: a decoder-only transformer whose attention kernel and positional encoding are plugins.

idx (B, N) -> token embedding -> positional.embed -> n_layers x Block -> norm -> lm_head
Block: x + attn(norm(x)), then x + mlp(norm(x))          (pre-norm, as GPT-2)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nima.errors import ConfigError
from nima.models.positional import Positional


class SelfAttention(nn.Module):
    """Multi-head (or grouped-query) causal self-attention around an attention plugin."""

    def __init__(self, d_model: int, n_heads: int, n_kv_heads: int, attention: Any, bias: bool):
        super().__init__()
        self.n_heads, self.n_kv_heads = n_heads, n_kv_heads
        self.head_dim = d_model // n_heads
        self.qkv = nn.Linear(d_model, (n_heads + 2 * n_kv_heads) * self.head_dim, bias=bias)
        self.proj = nn.Linear(d_model, d_model, bias=bias)
        self.attention = attention

    def forward(self, x: torch.Tensor, positions: torch.Tensor, positional: Positional):
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
    def __init__(self, d_model: int, hidden: int, bias: bool, dropout: float):
        super().__init__()
        self.fc = nn.Linear(d_model, hidden, bias=bias)
        self.proj = nn.Linear(hidden, d_model, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.proj(F.gelu(self.fc(x))))


class Block(nn.Module):
    def __init__(self, d_model, n_heads, n_kv_heads, mlp_ratio, attention, bias, dropout):
        super().__init__()
        self.norm1 = nn.LayerNorm(d_model, bias=bias)
        self.attn = SelfAttention(d_model, n_heads, n_kv_heads, attention, bias)
        self.norm2 = nn.LayerNorm(d_model, bias=bias)
        self.mlp = MLP(d_model, int(mlp_ratio * d_model), bias, dropout)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, positions: torch.Tensor, positional: Positional):
        x = x + self.dropout(self.attn(self.norm1(x), positions, positional))
        return x + self.mlp(self.norm2(x))


class GPT(nn.Module):
    """Decoder-only transformer (GPT-2 layout) built from an attention and a positional plugin."""

    def __init__(
        self,
        vocab_size: int,
        context_length: int = 256,
        d_model: int = 128,
        n_layers: int = 4,
        n_heads: int = 8,
        n_kv_heads: int | None = None,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
        bias: bool = False,
        tie_embeddings: bool = True,
        attention: Any = None,
        positional: Callable[..., Positional] | None = None,
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
            Block(d_model, n_heads, n_kv_heads, mlp_ratio, attention, bias, dropout)
            for _ in range(n_layers)
        )
        self.norm = nn.LayerNorm(d_model, bias=bias)
        self.lm_head = nn.Linear(d_model, vocab_size, bias=False)
        self.dropout = nn.Dropout(dropout)
        if tie_embeddings:
            self.lm_head.weight = self.token_embedding.weight
        self._init_weights(n_layers)

    def _init_weights(self, n_layers: int) -> None:
        """GPT-2 init: N(0, 0.02), residual projections scaled by 1/sqrt(2 * n_layers)."""
        for name, p in self.named_parameters():
            if p.dim() >= 2:
                std = 0.02 / math.sqrt(2 * n_layers) if name.endswith("proj.weight") else 0.02
                nn.init.normal_(p, mean=0.0, std=std)
            elif name.endswith("bias"):
                nn.init.zeros_(p)

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
        x = self.token_embedding(idx)  # (B, N, d_model)
        x = self.dropout(self.positional.embed(x, positions))
        for block in self.blocks:
            x = block(x, positions, self.positional)
        logits = self.lm_head(self.norm(x))  # (B, N, vocab)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())
        return logits, loss

    def num_parameters(self, non_embedding: bool = True) -> int:
        """Parameter count; non-embedding excludes the token embedding (and a tied head), as nanoGPT."""
        n = sum(p.numel() for p in self.parameters())
        return n - self.token_embedding.weight.numel() if non_embedding else n
