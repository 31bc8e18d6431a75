"""The Python entry point: a trained run as a language model you can prompt.

m = nima.load("runs/gpt-...")                       # best checkpoint; checkpoint="last"
out = m.generate("KING", max_new_tokens=100, samplers={"temperature": 0.8, "top_k": 40})
out.text, out.ids, out.finish_reason
outs = m.generate(["KING", "QUEEN"], samplers=[nima.get("sampler", "greedy")()])
for piece in m.stream("KING", max_new_tokens=100): print(piece, end="")
m.generate("KING", strategy=nima.get("strategy", "beam")(num_beams=4, num_return=3)).n_best
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from typing import Any

import torch

from nima.errors import ConfigError
from nima.generate import Completion, Job, SamplerChain, complete, encode_prompt, run
from nima.generate.engine import Overflow
from nima.generate.options import samplers_from, strategy_from


class LanguageModel:
    """A model and its tokenizer: prompts in, text (and ids) out."""

    def __init__(self, model: torch.nn.Module, tokenizer: Any) -> None:
        self.model, self.tokenizer = model.eval(), tokenizer

    def decoder(self, prompts: Sequence[str]) -> torch.nn.Module:
        """The model the engine decodes these prompts with (an encoder-decoder conditions its
        decoder on them); a decoder-only model is its own."""
        return self.model

    def job(
        self,
        prompts: Sequence[str],
        max_new_tokens: int = 200,
        samplers: Any = None,
        *,
        stop: Sequence[str] = (),
        seed: int = 0,
        ignore_eos: bool = False,
        overflow: Overflow = "slide",
        stream: bool = False,
    ) -> Job:
        """The engine's Job for these prompts and settings (samplers: instances or a dict)."""
        if isinstance(stop, str):
            stop = [stop]
        if isinstance(prompts, (str, bytes)) or not all(isinstance(p, str) for p in prompts):
            raise ConfigError(f"prompts must be a string or a list of strings, got {prompts!r}")
        return Job(
            [encode_prompt(self.tokenizer, p) for p in prompts],
            max_new_tokens,
            SamplerChain(samplers_from(samplers)),
            seed=seed,
            eos_id=None if ignore_eos else self.tokenizer.eos_id,
            stop=list(stop),
            decode=lambda ids: self.tokenizer.decode(ids, skip_special_tokens=True),
            stream=stream,
            overflow=overflow,
        )

    def generate(
        self,
        prompts: str | Sequence[str],
        max_new_tokens: int = 200,
        samplers: Any = None,
        strategy: Any = None,
        **options: Any,
    ) -> Completion | list[Completion]:
        """One Completion (text, ids, finish_reason; n_best for beam) per prompt, or one for a
        single prompt string. options: stop, seed, ignore_eos, overflow (see `job`)."""
        single = isinstance(prompts, str)
        if not single and not isinstance(prompts, Sequence):
            raise ConfigError(f"prompts must be a string or a list of strings, got {prompts!r}")
        prompts = [prompts] if single else list(prompts)
        job = self.job(prompts, max_new_tokens, samplers, **options)
        out = complete(self.decoder(prompts), job, strategy_from(strategy))
        return out[0] if single else out

    def stream(
        self,
        prompt: str,
        max_new_tokens: int = 200,
        samplers: Any = None,
        strategy: Any = None,
        **options: Any,
    ) -> Generator[str, None, Completion]:
        """The continuation of `prompt` in text pieces as they are decided (text that could
        still begin a stop string is held back until it is ruled out); the generator returns
        the Completion (ids, finish_reason) when it ends."""
        job = self.job([prompt], max_new_tokens, samplers, stream=True, **options)
        steps = run(self.decoder([prompt]), job, strategy_from(strategy))
        while True:
            try:
                piece = next(steps)
            except StopIteration as end:
                return end.value[0]
            yield piece.text
