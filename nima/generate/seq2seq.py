"""An encoder-decoder run as a LanguageModel: each prompt is the source (encoded once, padded
and masked), the output is decoded from the start token by the same engine, strategies and
samplers as a GPT's, through the model's `conditioned` decoder (GPT's decoding interface, the
memory and its keys and values held in the cache)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch

from nima.generate import Completion, complete, encode_prompt, run
from nima.generate.api import LanguageModel
from nima.generate.options import strategy_from


class EncoderDecoderLM(LanguageModel):
    """A model with `conditioned(source, source_mask)` (Seq2Seq) and its tokenizer."""

    def conditioned(self, sources: Sequence[str]) -> Any:
        """The decoder conditioned on the sources (their last context_length tokens)."""
        context = self.model.context_length
        ids = [encode_prompt(self.tokenizer, s)[-context:] for s in sources]
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

    def generate(
        self, prompts: str | Sequence[str], max_new_tokens: int = 200, samplers: Any = None,
        strategy: Any = None, **options: Any,
    ) -> Completion | list[Completion]:  # fmt: skip
        single = isinstance(prompts, str)
        prompts = [prompts] if single else list(prompts)
        job = self.job(prompts, max_new_tokens, samplers, **options)
        out = complete(self.conditioned(prompts), job, strategy_from(strategy))
        return out[0] if single else out

    def stream(
        self, prompt: str, max_new_tokens: int = 200, samplers: Any = None, strategy: Any = None,
        **options: Any,
    ) -> Iterator[str]:  # fmt: skip
        job = self.job([prompt], max_new_tokens, samplers, stream=True, **options)
        for piece in run(self.conditioned([prompt]), job, strategy_from(strategy)):
            yield piece.text


def language_model(model: torch.nn.Module, tokenizer: Any) -> LanguageModel:
    """The LanguageModel for `model`: an encoder-decoder's own, else the decoder-only one."""
    if hasattr(model, "conditioned"):
        return EncoderDecoderLM(model, tokenizer)
    return LanguageModel(model, tokenizer)
