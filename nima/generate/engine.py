"""The generation engine: prefill, cached decode steps, per-row stopping, and what a decoding
strategy gets and gives back.

The engine's whole interface to a model (an encoder-decoder plugs in by providing the same):

    model.context_length                       int: positions one forward may see
    model.new_cache(batch_size, max_len)       a cache with .length, .max_len, .reorder(index)
    model(idx, positions=, cache=, key_padding_mask=, last_only=True) -> logits (B, 1, V)
        idx (B, N) long; positions None (0.. continuing the cache) or (B, N) long; key_padding_mask
        None or (B, N) bool, True at real tokens (the cache keeps it for later steps)

Prompts of different lengths are left-padded into one batch: padding is masked out of attention
and every row's positions start at 0 at its first real token, so a row decodes as it would alone.

When the window is full (context_length positions cached), `overflow` decides: "slide" keeps the
last half of the window, re-prefills it at positions 0.. and goes on (one prefill per
context_length/2 new tokens; tokens before the window are forgotten, as in training; rows slide
together, so past the first slide a padded row differs from that prompt decoded alone); "stop"
ends each row whose window is full with finish reason "context", exactly where it would end alone.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from nima.errors import ConfigError
from nima.generate.processing import SamplerChain

Overflow = Literal["slide", "stop"]
PAD = -1  # the id of left padding in the token buffer the samplers see


@dataclass
class Job:
    """What to generate: token prompts, the limits and stops, and how to pick each token."""

    prompts: list[list[int]]
    max_new_tokens: int
    chain: SamplerChain = field(default_factory=SamplerChain)
    seed: int = 0  # row i samples with its own generator seeded seed + i
    eos_id: int | None = None  # a row ends when it draws this token (not part of its output)
    stop: Sequence[str] = ()  # a row ends before the first of these strings in its text
    decode: Callable[[list[int]], str] | None = None  # ids -> text (stop strings, streaming)
    stream: bool = False  # yield text pieces as rows advance (needs decode)
    overflow: Overflow = "slide"
    use_cache: bool = True  # False: re-read the whole window every step (a reference, slow)

    def __post_init__(self) -> None:
        n = self.max_new_tokens
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ConfigError(f"max_new_tokens must be an int >= 1, got {n!r}")
        if not self.prompts:
            raise ConfigError("no prompts to generate from; give at least one")
        if any(not p for p in self.prompts):
            raise ConfigError("every prompt needs at least one token; got an empty prompt")
        seed = self.seed
        if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
            raise ConfigError(
                f"seed must be an int >= 0 (row i samples with seed + i), got {seed!r}"
            )
        if self.overflow not in ("slide", "stop"):
            raise ConfigError(
                f"overflow must be 'slide' (the window slides on) or 'stop' (a full window ends "
                f"the row), got {self.overflow!r}"
            )
        if isinstance(self.stop, str) or not all(isinstance(s, str) and s for s in self.stop):
            raise ConfigError(
                f"stop must be a list of non-empty strings (a row ends before the first one in "
                f"its text), got {self.stop!r}"
            )
        if (self.stop or self.stream) and self.decode is None:
            raise ConfigError("stop strings and streaming need a decode function (ids -> text)")


@dataclass
class Completion:
    """One prompt's continuation: ids and text without the eos or stop string that ended it."""

    ids: list[int]
    text: str | None
    finish_reason: str  # "eos", "stop", "length" (max_new_tokens) or "context" (window full)
    score: float | None = None  # beam search: the length-penalised sum of log-probabilities
    n_best: list[Completion] = field(default_factory=list)  # beam search: the best first


@dataclass(frozen=True)
class Piece:
    """Streamed text: `text` continues row `row`'s output."""

    row: int
    text: str


Run = Generator[Piece, None, list[Completion]]


class Decoder:
    """A batch of sequences over one KV cache: `prefill()`, then `step(next_ids)`; both return
    the next position's logits (B, V). `ids` holds every row's tokens so far (PAD at padding)."""

    def __init__(
        self,
        model: Any,
        prompts: Sequence[Sequence[int]],
        max_new_tokens: int,
        *,
        overflow: Overflow = "slide",
        use_cache: bool = True,
    ) -> None:
        self.model, self.overflow, self.use_cache = model, overflow, use_cache
        self.window = model.context_length
        device = next(model.parameters()).device
        P = max(len(p) for p in prompts)
        if overflow == "stop" and P > self.window:
            raise ConfigError(
                f"a prompt of {P} tokens does not fit the model's context of {self.window}; "
                f"shorten it, or let the window slide (overflow='slide')"
            )
        self.ids = torch.full(
            (len(prompts), P + max_new_tokens), PAD, dtype=torch.long, device=device
        )
        for i, p in enumerate(prompts):  # left padding: every prompt ends at column P
            self.ids[i, P - len(p) : P] = torch.tensor(p, dtype=torch.long)
        self.n = P  # columns filled
        self.pads = [P - len(p) for p in prompts]
        # "stop": room for the padding too, so each row ends where it would alone
        slots = self.window + (max(self.pads) if overflow == "stop" else 0)
        self.cache = model.new_cache(len(prompts), slots) if use_cache else None
        self.next_pos: torch.Tensor | None = None  # (B,) next positions; None: no padding

    @property
    def so_far(self) -> torch.Tensor:
        """(B, N) every row's tokens so far, PAD at padding (what the samplers see)."""
        return self.ids[:, : self.n]

    def full(self, row: int) -> bool:
        """Row `row` fills its window: context_length positions (overflow "stop" ends it)."""
        filled = self.cache.length if self.cache is not None else self.n
        return filled - self.pads[row] >= self.window

    def prefill(self) -> torch.Tensor:
        """Run the prompts (their last `context_length` tokens) -> logits (B, V)."""
        return self._prefill(self.window)

    def _prefill(self, keep: int) -> torch.Tensor:
        """Forward the last `keep` columns from position 0, filling an emptied cache."""
        block = self.ids[:, max(0, self.n - keep) : self.n]  # (B, L), PAD at padding
        real = block >= 0
        if bool(real.all()):  # no padding: the model's own positions, no mask
            mask = positions = self.next_pos = None
        else:
            mask = real
            positions = (real.cumsum(dim=1) - 1).clamp(min=0)  # (B, L): 0 at the first real token
            self.next_pos = real.sum(dim=1)  # (B,)
        if self.cache is not None:
            self.cache.reset()
        logits = self.model(
            block.clamp(min=0),
            positions=positions,
            cache=self.cache,
            key_padding_mask=mask,
            last_only=True,
        )  # (B, 1, V)
        return logits[:, -1]

    def step(self, next_ids: torch.Tensor) -> torch.Tensor:
        """Append next_ids (B,) to every row and return the logits after them (B, V)."""
        self.ids[:, self.n] = next_ids
        self.n += 1
        if self.cache is None:  # the reference: the whole window again
            return self._prefill(self.window)
        if self.cache.length >= self.cache.max_len:
            if self.overflow == "stop":
                raise ConfigError("every window is full; a strategy ends rows that are `full`")
            return self._prefill(self.window // 2)  # slide: the last half, from position 0
        positions = None
        if self.next_pos is not None:
            # a row past its window (overflow "stop": ended, its output unused) stays in range
            positions = self.next_pos.clamp(max=self.window - 1)[:, None]  # (B, 1)
            self.next_pos = self.next_pos + 1
        logits = self.model(
            next_ids[:, None], positions=positions, cache=self.cache, last_only=True
        )
        return logits[:, -1]  # (B, V)

    def reorder(self, index: torch.Tensor) -> None:
        """Row i continues row index[i] (B,) long (beam search)."""
        self.ids = self.ids.index_select(0, index)
        if self.cache is not None:
            self.cache.reorder(index)
        if self.next_pos is not None:
            self.next_pos = self.next_pos.index_select(0, index)


def stop_position(text: str, stop: Sequence[str], start: int = 0) -> int:
    """Where the first stop string begins in text (searching from `start`), or -1."""
    found = [i for s in stop if (i := text.find(s, start)) >= 0]
    return min(found) if found else -1


def before_stop(ids: list[int], decode: Callable[[list[int]], str], at: int) -> list[int]:
    """The longest prefix of ids whose text ends at or before character `at` (where a stop
    string begins): only the tokens wholly before it."""
    ids = list(ids)
    while ids and len(decode(ids)) > at:
        ids.pop()
    return ids


def held_back(text: str, stop: Sequence[str]) -> int:
    """How many characters at the end of text could still begin a stop string (or be half a
    character a later token completes): they are not shown until that is ruled out."""
    hold = max(
        (k for s in stop for k in range(min(len(s) - 1, len(text)), 0, -1) if text.endswith(s[:k])),
        default=0,
    )
    if text.endswith("\ufffd"):  # an incomplete UTF-8 sequence (byte-level tokenizers)
        hold = max(hold, 1)
    return hold


class RowText:
    """One row's generated tokens, its stop conditions and the text already shown."""

    def __init__(self, job: Job) -> None:
        self.job = job
        self.ids: list[int] = []
        self.shown = 0  # characters of the text already streamed
        self.reason: str | None = None
        self.text: str | None = None

    @property
    def done(self) -> bool:
        return self.reason is not None

    def add(self, token: int) -> str:
        """Take the row's next token; returns the text that may be shown now."""
        job = self.job
        if token == job.eos_id:
            return self.finish("eos")
        self.ids.append(token)
        if not job.stop and not job.stream:
            return ""
        text = job.decode(self.ids)
        longest = max((len(s) for s in job.stop), default=0)
        at = stop_position(text, job.stop, max(0, self.shown - longest))
        if at >= 0:
            self.ids = before_stop(self.ids, job.decode, at)
            self.text = text[:at]
            return self.finish("stop")
        upto = len(text) - held_back(text, job.stop)
        piece = text[self.shown : upto] if upto > self.shown else ""
        self.shown = max(self.shown, upto)
        return piece

    def finish(self, reason: str) -> str:
        """End the row; returns the text not shown yet."""
        self.reason = reason
        if self.job.decode is None:
            return ""
        if self.text is None:
            self.text = self.job.decode(self.ids)
        piece = self.text[self.shown :]
        self.shown = len(self.text)
        return piece

    def completion(self) -> Completion:
        return Completion(list(self.ids), self.text, self.reason or "length")
