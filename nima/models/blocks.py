"""The shared blocks every model family is built from: norms, MLPs, the attention layer and the
pre-norm block. Each layer is its own module, so per-layer state (a KV cache slot, a captured
attention map) lives with the layer.

Norms and MLPs are plugins too (families `norm` and `mlp`, registered by plugins/nima_layers):
the classes here are the built-ins, each with its own init (`reset_parameters`):

    norm.layernorm  LayerNorm (GPT-2)            norm.rmsnorm  RMSNorm (LLaMA)
    mlp.gelu        fc -> GELU -> proj (GPT-2)   mlp.swiglu    SiLU-gated fc -> proj (LLaMA)
    mlp.relu2       fc -> ReLU^2 -> proj (Primer)

Init is GPT-2's: weights N(0, 0.02), biases 0, norm gains 1, and the projections that write into
the residual stream (attention's and the MLP's `proj`) N(0, residual_std), which the model sets to
0.02 / sqrt(2 * n_layers).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from nima.errors import ConfigError
from nima.validation import Range

Eps = Annotated[float, Range(gt=0)]


def init_linear(linear: nn.Linear, std: float) -> None:
    """GPT-2's init of a linear layer: weight N(0, std), bias 0."""
    nn.init.normal_(linear.weight, mean=0.0, std=std)
    if linear.bias is not None:
        nn.init.zeros_(linear.bias)


# --- norms: factory(d_model=, bias=) -> (..., d_model) -> (..., d_model) ----------------------


class LayerNorm(nn.LayerNorm):
    """LayerNorm over the last dimension: gain 1, bias 0 when the model has biases (GPT-2)."""

    def __init__(self, d_model: int, bias: bool = False, eps: Eps = 1e-5) -> None:
        super().__init__(d_model, eps=eps, bias=bias)


class RMSNorm(nn.Module):
    """x / sqrt(mean(x^2) + eps) * gain (Zhang & Sennrich 2019; LLaMA). It has no bias by
    definition, so the model's `bias` is ignored."""

    def __init__(self, d_model: int, bias: bool = False, eps: Eps = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d_model))

    def reset_parameters(self) -> None:
        nn.init.ones_(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, self.weight.shape, self.weight, self.eps)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"


# --- MLPs: factory(d_model=, hidden=, bias=, dropout=, residual_std=) -------------------------


class FeedForward(nn.Module):
    """fc -> activate -> proj -> dropout; subclasses choose the activation. `proj` writes into
    the residual stream (init std residual_std). A gated MLP's fc makes 2 x hidden features."""

    gated = False

    def __init__(
        self, d_model: int, hidden: int, bias: bool = False, dropout: float = 0.0,
        residual_std: float = 0.02,
    ) -> None:  # fmt: skip
        super().__init__()
        self.residual_std = residual_std
        self.fc = nn.Linear(d_model, hidden * (2 if self.gated else 1), bias=bias)
        self.proj = nn.Linear(hidden, d_model, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def reset_parameters(self) -> None:
        init_linear(self.fc, 0.02)
        init_linear(self.proj, self.residual_std)

    def activate(self, h: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.proj(self.activate(self.fc(x))))  # (B, N, d_model)


class GeluMLP(FeedForward):
    """fc -> GELU -> proj (GPT-2; the exact erf GELU, or with approximate='tanh' the tanh
    approximation OpenAI's GPT-2 weights were trained with, Hugging Face's "gelu_new")."""

    def __init__(
        self, d_model: int, hidden: int, bias: bool = False, dropout: float = 0.0,
        residual_std: float = 0.02, approximate: Literal["none", "tanh"] = "none",
    ) -> None:  # fmt: skip
        super().__init__(d_model, hidden, bias, dropout, residual_std)
        self.approximate = approximate

    def activate(self, h: torch.Tensor) -> torch.Tensor:
        return F.gelu(h, approximate=self.approximate)


class SwiGLU(FeedForward):
    """SiLU(x W_gate) * (x W_up) -> proj (Shazeer 2020; LLaMA). Its fc is twice as wide, so
    GPT.mlp_ratio = 8/3 keeps gelu's parameter count."""

    gated = True

    def activate(self, h: torch.Tensor) -> torch.Tensor:
        gate, up = h.chunk(2, dim=-1)  # (B, N, hidden) each
        return F.silu(gate) * up


class ReLU2(FeedForward):
    """fc -> ReLU(.)^2 -> proj (squared ReLU, So et al. 2021, "Primer")."""

    def activate(self, h: torch.Tensor) -> torch.Tensor:
        return F.relu(h).square()


# --- attention layer and block ----------------------------------------------------------------


class AttentionLayer(nn.Module):
    """Multi-head (or grouped-query) attention around an attention plugin instance.

    Self-attention projects q, k and v from x (one fused qkv); cross-attention (cross=True)
    projects q from x and k, v from `memory`. causal=False attends to every key. The layer owns
    its plugin instance (the model gives each layer its own). A KV cache stores this layer's
    rotated keys and values (cross-attention: the memory's, projected at the first call);
    queries are then the last N of the Nk cached positions, which the attention contract's
    bottom-right causal alignment handles.
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        n_kv_heads: int,
        attention: Any,
        *,
        causal: bool = True,
        cross: bool = False,
        bias: bool = False,
        residual_std: float = 0.02,
    ) -> None:
        super().__init__()
        self.n_heads, self.n_kv_heads = n_heads, n_kv_heads
        self.head_dim = d_model // n_heads
        self.causal, self.cross, self.residual_std = causal, cross, residual_std
        H, Hkv, D = n_heads, n_kv_heads, self.head_dim
        if cross:
            self.q = nn.Linear(d_model, H * D, bias=bias)
            self.kv = nn.Linear(d_model, 2 * Hkv * D, bias=bias)
        else:
            self.qkv = nn.Linear(d_model, (H + 2 * Hkv) * D, bias=bias)
        self.proj = nn.Linear(d_model, d_model, bias=bias)
        self.attention = attention  # the plugin: its parameters, if any, are its own

    def reset_parameters(self) -> None:
        for linear in (self.q, self.kv) if self.cross else (self.qkv,):
            init_linear(linear, 0.02)
        init_linear(self.proj, self.residual_std)

    def forward(
        self,
        x: torch.Tensor,
        *,
        positional: Any = None,
        angles: Any = None,
        memory: torch.Tensor | None = None,
        key_padding_mask: torch.Tensor | None = None,
        bias: torch.Tensor | None = None,
        cache: Any = None,
    ) -> torch.Tensor:
        """x (B, N, C) -> (B, N, C).

        positional, angles: the model's positional module and what its `prepare` gave (queries
        and keys are rotated; self-attention only). memory (B, M, C): what cross-attention
        attends to. key_padding_mask bool (B, Nk) and bias (B or 1, H, N, Nk): as the attention
        contract, over every key (the cached ones too). cache: this layer's slot of a KVCache
        (cross-attention keeps the memory's keys and values there, projected once).
        """
        B, N, C = x.shape
        H, Hkv, D = self.n_heads, self.n_kv_heads, self.head_dim
        if self.cross:
            q = self.q(x).view(B, N, H, D).transpose(1, 2)  # (B, H, N, D)
            if cache is not None and cache.memory_kv is not None:
                k, v = cache.memory_kv  # projected once, at the first decoding step
            else:
                if memory is None:
                    raise ConfigError("cross-attention needs `memory` (the encoder's output)")
                M = memory.shape[1]
                k, v = self.kv(memory).split([Hkv * D, Hkv * D], dim=-1)
                k = k.view(B, M, Hkv, D).transpose(1, 2)  # (B, Hkv, M, D)
                v = v.view(B, M, Hkv, D).transpose(1, 2)  # (B, Hkv, M, D)
                if cache is not None:
                    cache.memory_kv = k, v
        else:
            q, k, v = self.qkv(x).split([H * D, Hkv * D, Hkv * D], dim=-1)
            q = q.view(B, N, H, D).transpose(1, 2)  # (B, H, N, D)
            k = k.view(B, N, Hkv, D).transpose(1, 2)  # (B, Hkv, N, D)
            v = v.view(B, N, Hkv, D).transpose(1, 2)  # (B, Hkv, N, D)
            if positional is not None:
                q, k = positional.rotate(q, k, angles)
            if cache is not None:
                k, v = cache.update(k, v)  # (B, Hkv, Nk, D): every key so far, these last
        y = self.attention(
            q, k, v, causal=self.causal, key_padding_mask=key_padding_mask, bias=bias
        )  # (B, H, N, D)
        return self.proj(y.transpose(1, 2).reshape(B, N, C))


class Block(nn.Module):
    """Pre-norm transformer block (GPT-2): x + attn(norm1(x)), then x + mlp(norm2(x)).

    With `cross` (a cross-attention layer; the encoder-decoder's decoder), x + cross(norm_cross(x),
    memory) comes between the two (Vaswani et al. 2017's decoder layer, pre-norm).
    """

    def __init__(
        self, d_model: int, attn: AttentionLayer, mlp: nn.Module, norm: Any, bias: bool,
        dropout: float, cross: AttentionLayer | None = None,
    ) -> None:  # fmt: skip
        super().__init__()
        self.norm1 = norm(d_model=d_model, bias=bias)
        self.attn = attn
        if cross is not None:
            self.norm_cross = norm(d_model=d_model, bias=bias)
            self.cross = cross
        self.norm2 = norm(d_model=d_model, bias=bias)
        self.mlp = mlp
        self.dropout = nn.Dropout(dropout)

    @property
    def has_cross(self) -> bool:
        return hasattr(self, "cross")

    def reset_parameters(self) -> None:
        self.norm1.reset_parameters()
        self.attn.reset_parameters()
        if self.has_cross:
            self.norm_cross.reset_parameters()
            self.cross.reset_parameters()
        self.norm2.reset_parameters()
        self.mlp.reset_parameters()

    def forward(
        self,
        x: torch.Tensor,
        memory: torch.Tensor | None = None,
        memory_mask: torch.Tensor | None = None,
        cross_cache: Any = None,
        **attention_inputs: Any,
    ) -> torch.Tensor:
        """x (B, N, C) -> (B, N, C); attention_inputs go to AttentionLayer.forward. memory
        (B, M, C) and memory_mask bool (B, M): what the cross-attention reads, if any."""
        x = x + self.dropout(self.attn(self.norm1(x), **attention_inputs))
        if self.has_cross:
            y = self.norm_cross(x)
            x = x + self.dropout(
                self.cross(y, memory=memory, key_padding_mask=memory_mask, cache=cross_cache)
            )
        return x + self.mlp(self.norm2(x))
