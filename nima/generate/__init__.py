"""Generation: a decoding strategy (sample, beam) runs the engine's prefill and cached decode
steps, with the sampler chain picking tokens. See engine.py for what a model must provide.

    from nima.generate import Job, SamplerChain, complete
    job = Job([[5, 6, 7]], max_new_tokens=20, chain=SamplerChain([Temperature(0.8)]), seed=0)
    [completion] = complete(model, job)            # strategy: sample (the default)
    completion.ids, completion.finish_reason

Python users start from `nima.load(run_dir)` (nima.generate.api).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import torch

from nima.errors import ConfigError
from nima.generate.engine import Completion, Job, Piece, Run
from nima.generate.processing import RowRandom, SamplerChain, token_counts

__all__ = [
    "Completion", "Job", "Piece", "RowRandom", "SamplerChain", "complete", "encode_prompt",
    "generate", "run", "sample_text", "token_counts",
]  # fmt: skip


def default_strategy() -> Any:
    from nima_samplers.strategies import SampleStrategy

    return SampleStrategy()


@contextlib.contextmanager
def _decoding(model: torch.nn.Module):
    """Eval mode without gradients, the caller's mode restored after."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


def run(model: torch.nn.Module, job: Job, strategy: Any = None) -> Run:
    """The strategy's run (default: sample) as a generator of Pieces returning Completions. The
    model decodes in eval mode without gradients, and the caller's mode is back between pieces."""
    steps = (strategy or default_strategy())(model, job)
    while True:
        with _decoding(model):
            try:
                piece = next(steps)
            except StopIteration as end:
                return end.value
        yield piece


def complete(model: torch.nn.Module, job: Job, strategy: Any = None) -> list[Completion]:
    """Run to the end; one Completion per prompt."""
    steps = run(model, job, strategy)
    while True:
        try:
            next(steps)
        except StopIteration as end:
            return end.value


def generate(
    model: torch.nn.Module,
    idx: torch.Tensor,
    max_new_tokens: int,
    sampler: SamplerChain,
    generator: torch.Generator | None = None,
    stop_id: int | None = None,
) -> torch.Tensor:
    """idx (B, N) extended by max_new_tokens through the cached engine -> (B, N + new); rows
    that stop early at stop_id are filled with it. The seed is drawn from `generator` (so it
    advances, and a second call samples afresh); without one it is 0. Row i uses seed + i."""
    seed = 0
    if generator is not None:
        seed = int(torch.randint(0, 2**62, (), generator=generator, device=generator.device))
    job = Job(idx.tolist(), max_new_tokens, sampler, seed=seed, eos_id=stop_id)
    fill = stop_id if stop_id is not None else 0
    rows = [c.ids + [fill] * (max_new_tokens - len(c.ids)) for c in complete(model, job)]
    return torch.cat([idx, torch.tensor(rows, dtype=idx.dtype, device=idx.device)], dim=1)


def encode_prompt(tokenizer: Any, prompt: str) -> list[int]:
    """A generation prompt's ids; an empty one is refused (the model needs one token to start)."""
    ids = tokenizer.encode(prompt)
    if not ids:
        raise ConfigError(
            f"The prompt {prompt!r} encodes to no tokens; give at least one character."
        )
    return ids


def sample_text(
    model: torch.nn.Module,
    tokenizer: Any,
    prompt: str,
    n_tokens: int,
    samplers: Sequence[Any],
    seed: int,
) -> str:
    """`prompt` continued by `n_tokens` tokens through the sampler chain (the end-of-run sample;
    the window slides past context_length)."""
    ids = encode_prompt(tokenizer, prompt)
    if n_tokens > 0:
        job = Job([ids], n_tokens, SamplerChain(samplers), seed=seed)
        ids = ids + complete(model, job)[0].ids
    return tokenizer.decode(ids, skip_special_tokens=True)
