"""GPT: a decoder-only transformer whose every part is a plugin, built from the shared blocks.

idx (B, N) -> token embedding -> positional.embed -> n_layers x Block -> norm -> lm_head -> logits
Block: x + attn(norm(x)), then x + mlp(norm(x))          (pre-norm, as GPT-2)

Plugins: attention (an instance, copied into each layer, so each layer owns its own), positional,
norm and mlp (factories the model calls with its sizes). The model returns logits; the loss is the
training objective's (nima.train.objectives). With a KV cache (`new_cache`), a forward continues
the cached sequence: a prompt is prefilled in one call, then tokens are decoded one at a time.
The stack (embedding to final norm) is nima.models.stack's, shared with BERT and seq2seq.

Init is GPT-2's, and each module owns its part (`reset_parameters`, see nima.models.blocks):
weights N(0, 0.02), the two projections that write into the residual stream scaled by
1/sqrt(2 * n_layers), biases 0, norm gains 1. The positional and attention plugins initialise
their own parameters; the model never touches them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

import torch
from torch import nn

from nima.contracts import Attention
from nima.models.cache import KVCache
from nima.models.positional import Positional
from nima.models.stack import TransformerStack
from nima.validation import Range, checked

Size = Annotated[int, Range(ge=1)]


@checked  # gin bindings and Python calls alike are checked against these annotations
class GPT(TransformerStack):
    """Decoder-only transformer (GPT-2 layout) from attention, positional, norm and mlp plugins."""

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
        super().__init__(
            vocab_size, context_length, d_model, n_layers, n_heads, n_kv_heads, mlp_ratio,
            dropout, bias, attention, positional, norm, mlp, causal=True,
        )  # fmt: skip
        self.lm_head = nn.Linear(d_model, vocab_size, bias=False)
        if tie_embeddings:
            self.lm_head.weight = self.token_embedding.weight
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """GPT-2 init of the model's own modules, in module order (the plugins keep theirs).

        Run once after every module is built, so a seed gives the weights GPT-2's walk over
        the parameters gave.
        """
        super().reset_parameters()
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
        x = self.hidden(
            idx,
            positions=positions,
            cache=cache,
            key_padding_mask=key_padding_mask,
            last_only=last_only,
        )  # (B, N or 1, d_model)
        return self.lm_head(x)  # (B, N or 1, vocab)
