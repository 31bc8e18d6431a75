"""BERT: a bidirectional encoder on the shared stack, trained as a masked language model.

idx (B, N) -> token embedding -> positional.embed -> n_layers x Block (every position sees every
other, padding excepted) -> norm -> mlm_head -> logits (B, N, vocab)

The same plugins as GPT (attention, positional, norm, mlp); only the attention is not causal.
The masked-LM head is the token embedding again (tied, as BERT's decoder), applied straight to
the final norm's output (BERT adds a dense + GELU + LayerNorm transform first; the final
pre-norm LayerNorm stands in for it here). `n_classes > 0` adds a sequence-classification head
(`classify`): the mean of the final hidden states over the sequence's real tokens -> linear.
The masking is the objective's (objective.masked_lm), not the model's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

import torch
from torch import nn

from nima.contracts import Attention
from nima.errors import ConfigError
from nima.models.blocks import init_linear
from nima.models.positional import Positional
from nima.models.stack import TransformerStack
from nima.validation import Range, checked

Size = Annotated[int, Range(ge=1)]
NO_CACHE = (
    "BERT is a bidirectional encoder: every position attends to every other, so it has no KV "
    "cache and does not generate left to right. Fill masks with `nima fill RUN_DIR --text "
    "'... <mask> ...'`, or train a GPT (train.model = @GPT) to generate."
)


@checked
class BERT(TransformerStack):
    """Bidirectional encoder (masked-LM head, optional classifier) from the same plugins as GPT."""

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
        n_classes: Annotated[int, Range(ge=0)] = 0,  # > 0: a sequence-classification head
        attention: Attention | None = None,  # an instance: @attention.sdpa(), one copy per layer
        positional: Callable[..., Positional] | None = None,  # a factory: @positional.learned
        norm: Callable[..., nn.Module] | None = None,  # a factory (None: layernorm)
        mlp: Callable[..., nn.Module] | None = None,  # a factory (None: gelu)
    ):
        super().__init__(
            vocab_size, context_length, d_model, n_layers, n_heads, n_kv_heads, mlp_ratio,
            dropout, bias, attention, positional, norm, mlp, causal=False, family="BERT",
        )  # fmt: skip
        self.mlm_head = nn.Linear(d_model, vocab_size, bias=False)
        if tie_embeddings:
            self.mlm_head.weight = self.token_embedding.weight
        self.classifier = nn.Linear(d_model, n_classes) if n_classes else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """GPT-2's init (see nima.models.stack), the heads N(0, 0.02)."""
        super().reset_parameters()
        if self.mlm_head.weight is not self.token_embedding.weight:
            nn.init.normal_(self.mlm_head.weight, mean=0.0, std=0.02)
        if self.classifier is not None:
            init_linear(self.classifier, 0.02)

    def encode(
        self,
        idx: torch.Tensor,
        *,
        positions: torch.Tensor | None = None,
        key_padding_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """idx (B, N) -> final hidden states (B, N, d_model); key_padding_mask bool (B, N),
        False at padding (no position attends to it)."""
        return self.hidden(idx, positions=positions, key_padding_mask=key_padding_mask)

    def forward(
        self,
        idx: torch.Tensor,
        *,
        positions: torch.Tensor | None = None,
        cache: None = None,
        key_padding_mask: torch.Tensor | None = None,
        last_only: bool = False,
    ) -> torch.Tensor:
        """idx (B, N) -> masked-LM logits (B, N, vocab) (or (B, 1, vocab) with last_only).

        Every position sees the whole sequence, so there is nothing to cache: `cache` must be
        None (it is in the signature so any caller of the model contract gets a clear error).
        """
        if cache is not None:
            raise ConfigError(NO_CACHE)
        x = self.encode(idx, positions=positions, key_padding_mask=key_padding_mask)
        if last_only:
            x = x[:, -1:]  # (B, 1, d_model)
        return self.mlm_head(x)  # (B, N or 1, vocab)

    def classify(
        self, idx: torch.Tensor, *, key_padding_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """idx (B, N) -> class logits (B, n_classes): the mean hidden state of each sequence's
        real tokens (key_padding_mask True), through the classifier."""
        if self.classifier is None:
            raise ConfigError("BERT.classify needs a classification head: set BERT.n_classes > 0")
        x = self.encode(idx, key_padding_mask=key_padding_mask)  # (B, N, d_model)
        if key_padding_mask is None:
            pooled = x.mean(dim=1)
        else:
            keep = key_padding_mask[..., None].to(x.dtype)  # (B, N, 1)
            pooled = (x * keep).sum(dim=1) / keep.sum(dim=1).clamp(min=1)
        return self.classifier(pooled)  # (B, n_classes)

    def new_cache(self, batch_size: int, max_len: int | None = None, **options) -> None:
        """BERT attends in both directions: a new token changes every position, so no KV cache."""
        raise ConfigError(NO_CACHE)
