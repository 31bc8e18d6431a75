"""Training objectives: how a batch and the model's logits become a loss.

Models return logits and know nothing of targets; the objective owns them. The next-token
(causal LM) objective is here; masked-LM and seq2seq objectives sit beside it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100
"""A target equal to this (padding) counts for nothing in the loss, as F.cross_entropy's default."""


def next_token_loss(
    logits: torch.Tensor, targets: torch.Tensor, ignore_index: int = IGNORE_INDEX
) -> torch.Tensor:
    """Mean cross-entropy of logits (B, N, V) against targets (B, N), in fp32 whatever the
    logits' dtype; targets equal to ignore_index are left out of the mean."""
    return F.cross_entropy(
        logits.flatten(0, 1).float(), targets.flatten(), ignore_index=ignore_index
    )


def causal_lm(
    model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, ignore_index: int = IGNORE_INDEX
) -> torch.Tensor:
    """The next-token objective on one batch: y (B, N) is x (B, N) shifted by one token."""
    return next_token_loss(model(x), y, ignore_index)
