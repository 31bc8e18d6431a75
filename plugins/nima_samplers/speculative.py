"""Speculative decoding (Leviathan et al. 2023; Chen et al. 2023) as a strategy plugin.

A small draft model proposes `lookahead` tokens one by one; the model scores all of them in one
forward over its KV cache and keeps the longest prefix it agrees with, plus one token of its own
(so every round yields at least one token). With a greedy chain "agrees" means "is its argmax":
the output is exactly the model's greedy output. With a sampling chain, draft token x is kept
with probability min(1, p(x) / q(x)) and a rejection resamples from max(0, p - q): the output is
distributed exactly as sampling from the model (the chain's processors shape both p and q).

Prompts run one at a time (rows accept different numbers of tokens). The window does not slide:
a row whose window is full ends with finish reason "context".
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Annotated, Any

import torch

from nima.errors import ConfigError
from nima.generate.engine import Completion, Job, Piece, RowText, Run
from nima.validation import Range, checked
from nima_samplers.samplers import Greedy, Sample


def _distribution(job: Job, ids: list[int], logits: torch.Tensor) -> torch.Tensor:
    """The chain's processed distribution (V,) of the next token after `ids`."""
    row = torch.tensor([ids], device=logits.device)
    return job.chain.process(row, logits[None]).softmax(dim=-1)[0]


@checked
class Speculative:
    """Speculative decoding: a draft model proposes, the model verifies lookahead tokens at once."""

    def __init__(self, draft: Any = None, lookahead: Annotated[int, Range(ge=1)] = 4) -> None:
        if draft is None:
            raise ConfigError(
                "strategy.speculative needs a draft model (draft=..., a smaller model with the "
                "same vocabulary; on the command line --draft RUN_DIR)"
            )
        self.draft = getattr(draft, "model", draft)  # a LanguageModel or the module itself
        self.lookahead = lookahead

    def __call__(self, model: Any, job: Job) -> Run:
        selector = job.chain.selector
        greedy = isinstance(selector, Greedy)
        if selector is not None and not isinstance(selector, (Greedy, Sample)):
            raise ConfigError(
                f"speculative decoding verifies greedy or sampling chains; the selector "
                f"{type(selector).__name__} is neither"
            )
        ours, theirs = getattr(model, "vocab_size", None), getattr(self.draft, "vocab_size", None)
        if ours != theirs:
            raise ConfigError(
                f"the draft model's vocabulary ({theirs} tokens) is not the model's ({ours}); "
                f"speculative decoding needs a draft trained with the same tokenizer"
            )
        was_training = self.draft.training
        self.draft.eval()
        try:
            completions = []
            for i, prompt in enumerate(job.prompts):
                device = next(model.parameters()).device
                generator = torch.Generator(device=device).manual_seed(job.seed + i)
                completion = yield from self._row(model, job, i, prompt, greedy, generator)
                completions.append(completion)
            return completions
        finally:
            self.draft.train(was_training)

    def _row(
        self, model, job: Job, i: int, prompt: list[int], greedy: bool, generator
    ) -> Generator[Piece, None, Completion]:
        window = min(model.context_length, self.draft.context_length)
        if len(prompt) > window:
            raise ConfigError(f"a prompt of {len(prompt)} tokens does not fit the context {window}")
        target, draft = model.new_cache(1, window), self.draft.new_cache(1, window)
        device = next(model.parameters()).device
        ids, row = list(prompt), RowText(job)
        made = 0

        def feed(m, cache, tokens: list[int]) -> torch.Tensor:  # -> logits (N, V)
            return m(torch.tensor([tokens], device=device), cache=cache)[0].float()

        while not row.done:
            if len(ids) > window:  # the last token cannot be fed: the window is full
                piece = row.finish("context")
            else:  # k proposals fit the window and the token budget (one token is the model's)
                k = min(self.lookahead, window - len(ids), job.max_new_tokens - made - 1)
                proposed, q = [], []
                if k > 0:  # the draft catches up with ids, then proposes k tokens
                    logits = feed(self.draft, draft, ids[draft.length :])[-1]
                    for j in range(k):
                        q.append(_distribution(job, ids + proposed, logits))
                        x = (
                            q[-1].argmax()
                            if greedy
                            else torch.multinomial(q[-1], 1, generator=generator)
                        )
                        proposed.append(int(x))
                        if j < k - 1:
                            logits = feed(self.draft, draft, proposed[-1:])[-1]
                base = target.length
                logits = feed(model, target, ids[base:] + proposed)  # (new + k, V)
                p = [_distribution(job, ids + proposed[:j], logits[len(ids) - base - 1 + j])
                     for j in range(k + 1)]  # fmt: skip
                kept, extra = self._verify(proposed, p, q, greedy, generator)
                target.crop(len(ids) + kept)  # drop the rejected proposals
                draft.crop(min(draft.length, len(ids) + kept))
                piece = ""
                for token in proposed[:kept] + [extra]:
                    ids.append(token)
                    made += 1
                    piece += row.add(token)
                    if row.done:
                        break
                if not row.done and made >= job.max_new_tokens:
                    piece += row.finish("length")
            if piece:
                yield Piece(i, piece)
        return row.completion()

    @staticmethod
    def _verify(proposed, p, q, greedy: bool, generator) -> tuple[int, int]:
        """How many proposals the model keeps, and its own next token after them."""
        for j, x in enumerate(proposed):
            if greedy:
                if int(p[j].argmax()) != x:
                    return j, int(p[j].argmax())
            elif torch.rand(1, generator=generator, device=generator.device) * q[j][x] >= p[j][x]:
                residual = (p[j] - q[j]).clamp(min=0)  # rejected: draw from max(0, p - q)
                return j, int(torch.multinomial(residual / residual.sum(), 1, generator=generator))
        last = p[len(proposed)]
        extra = last.argmax() if greedy else torch.multinomial(last, 1, generator=generator)
        return len(proposed), int(extra)
