"""An encoder-decoder run as a LanguageModel: each prompt is the source (encoded once, padded
and masked), the output is decoded from the start token by the same engine, strategies and
samplers as a GPT's, through the model's `conditioned` decoder (GPT's decoding interface, the
memory and its keys and values held in the cache)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from nima.generate import encode_prompt
from nima.generate.api import LanguageModel
from nima.models.seq2seq import source_window


class EncoderDecoderLM(LanguageModel):
    """A model with `conditioned(source, source_mask)` (Seq2Seq) and its tokenizer."""

    def decoder(self, sources: Sequence[str]) -> Any:
        """The decoder conditioned on the sources (source_window: their first context_length
        tokens, as in training)."""
        context = self.model.context_length
        ids = [source_window(encode_prompt(self.tokenizer, s), context) for s in sources]
        device = next(self.model.parameters()).device
        S = max(map(len, ids))
        source = torch.full((len(ids), S), self.tokenizer.pad_id, dtype=torch.long, device=device)
        mask = torch.zeros(len(ids), S, dtype=torch.bool, device=device)
        for row, s in enumerate(ids):
            source[row, : len(s)] = torch.tensor(s, device=device)
            mask[row, : len(s)] = True
        with torch.no_grad():
            return self.model.conditioned(source, mask)

    def job(self, prompts: Sequence[str], *args: Any, **options: Any):
        """The engine's Job: every row starts from the start token; overflow stops a row."""
        options.setdefault("overflow", "stop")  # an answer longer than the window ends there
        job = super().job(prompts, *args, **options)
        job.prompts = [[self.tokenizer.sos_id] for _ in prompts]
        return job


def language_model(model: torch.nn.Module, tokenizer: Any) -> LanguageModel:
    """The LanguageModel for `model`: an encoder-decoder's own, else the decoder-only one."""
    if hasattr(model, "conditioned"):
        return EncoderDecoderLM(model, tokenizer)
    return LanguageModel(model, tokenizer)
