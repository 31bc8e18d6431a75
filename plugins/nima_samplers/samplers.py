"""Logits processors and the greedy selector (sampler contract v2; compose in any order).

A processor is called as `processor(ids, logits) -> logits`: `ids` (B, N) long are each row's
tokens so far (prompt and generated, -1 at left padding), `logits` (B, V) float are the next
position's scores. A token a processor rules out gets -inf. Ties are broken by token id: the
lower id ranks first (top_k, top_p and typical sort stably), so which tokens survive is defined.
"""

from __future__ import annotations

from typing import Annotated

import torch

from nima.generate.processing import token_counts
from nima.validation import Range, checked

NEG_INF = float("-inf")


def _keep_first(order: torch.Tensor, keep_sorted: torch.Tensor, logits: torch.Tensor):
    """-inf everywhere except the tokens kept in sorted order (order, keep_sorted: (B, V))."""
    keep = torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)
    return logits.masked_fill(~keep, NEG_INF)


def _sorted_desc(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits sorted high to low, ties in token-id order (a stable sort of the negation)."""
    values, order = torch.sort(-logits, dim=-1, stable=True)
    return -values, order


@checked
class Temperature:
    """Divide logits by a temperature (below 1 sharpens, above 1 flattens; towards 0: greedy)."""

    def __init__(self, temperature: Annotated[float, Range(gt=0)] = 1.0) -> None:
        self.temperature = temperature

    def __call__(self, ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        out = logits / self.temperature  # (B, V)
        overflow = (out.isinf() | out.isnan()) & logits.isfinite()  # a tiny temperature
        if overflow.any():  # such rows from their max: the same softmax, the top logit at 0
            top = logits.max(dim=-1, keepdim=True).values
            shifted = (logits - top) / self.temperature
            out = torch.where(overflow.any(dim=-1, keepdim=True), shifted, out)
        return out


@checked
class TopK:
    """Keep exactly the k highest logits of each row (ties: the lower token ids); the rest -inf."""

    def __init__(self, k: Annotated[int, Range(ge=1)] = 50) -> None:
        self.k = k

    def __call__(self, ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        if self.k >= logits.size(-1):
            return logits
        _, order = _sorted_desc(logits)  # (B, V)
        keep_sorted = torch.zeros_like(order, dtype=torch.bool)
        keep_sorted[:, : self.k] = True
        return _keep_first(order, keep_sorted, logits)


@checked
class TopP:
    """Nucleus: keep the smallest set of most likely tokens whose probability reaches p."""

    def __init__(self, p: Annotated[float, Range(gt=0, le=1)] = 0.9) -> None:
        self.p = p

    def __call__(self, ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        sorted_logits, order = _sorted_desc(logits)
        probs = sorted_logits.softmax(dim=-1)  # (B, V), high to low
        # keep a token while the mass strictly before it is below p (the top token always stays)
        keep_sorted = probs.cumsum(dim=-1) - probs < self.p
        keep_sorted[:, 0] = True
        return _keep_first(order, keep_sorted, logits)


@checked
class MinP:
    """Keep the tokens whose probability is at least min_p times the most likely one's."""

    def __init__(self, min_p: Annotated[float, Range(gt=0, le=1)] = 0.05) -> None:
        self.min_p = min_p

    def __call__(self, ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        # p_i >= min_p * p_max  <=>  logit_i >= logit_max + log(min_p)
        floor = logits.max(dim=-1, keepdim=True).values + torch.log(torch.tensor(self.min_p))
        return logits.masked_fill(logits < floor, NEG_INF)


@checked
class Typical:
    """Locally typical sampling (Meister et al. 2022): keep the tokens whose surprisal is closest
    to the distribution's entropy, the smallest such set whose probability reaches `mass`."""

    def __init__(self, mass: Annotated[float, Range(gt=0, le=1)] = 0.9) -> None:
        self.mass = mass

    def __call__(self, ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        logp = logits.log_softmax(dim=-1)  # (B, V)
        p = logp.exp()
        entropy = -(p * logp.nan_to_num(neginf=0.0)).sum(-1, keepdim=True)  # (B, 1)
        distance = (-logp - entropy).abs()  # (B, V); +inf for ruled-out tokens
        _, order = torch.sort(distance, dim=-1, stable=True)  # most typical first
        p_sorted = p.gather(-1, order)
        keep_sorted = p_sorted.cumsum(dim=-1) - p_sorted < self.mass
        keep_sorted[:, 0] = True
        return _keep_first(order, keep_sorted, logits)


@checked
class RepetitionPenalty:
    """CTRL's repetition penalty (Keskar et al. 2019): a token already in the sequence has its
    logit divided by `penalty` when positive, multiplied by it when negative (>1 discourages)."""

    def __init__(self, penalty: Annotated[float, Range(gt=0)] = 1.2) -> None:
        self.penalty = penalty

    def __call__(self, ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        seen = token_counts(ids, logits.size(-1)) > 0  # (B, V)
        penalised = torch.where(logits > 0, logits / self.penalty, logits * self.penalty)
        return torch.where(seen, penalised, logits)


@checked
class FrequencyPenalty:
    """OpenAI's frequency penalty: subtract penalty x (times the token occurs so far)."""

    def __init__(self, penalty: Annotated[float, Range(ge=-2, le=2)] = 0.5) -> None:
        self.penalty = penalty

    def __call__(self, ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        return logits - self.penalty * token_counts(ids, logits.size(-1)).to(logits.dtype)


@checked
class PresencePenalty:
    """OpenAI's presence penalty: subtract penalty from every token that occurs so far."""

    def __init__(self, penalty: Annotated[float, Range(ge=-2, le=2)] = 0.5) -> None:
        self.penalty = penalty

    def __call__(self, ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        seen = token_counts(ids, logits.size(-1)) > 0
        return logits - self.penalty * seen.to(logits.dtype)


@checked
class NoRepeatNgram:
    """Rule out every token that would complete an n-gram already in the sequence."""

    def __init__(self, n: Annotated[int, Range(ge=1)] = 3) -> None:
        self.n = n

    def __call__(self, ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        n, N = self.n, ids.size(1)
        if N < n:  # no whole n-gram yet
            return logits
        if n == 1:  # every token seen is banned
            return logits.masked_fill(token_counts(ids, logits.size(-1)) > 0, NEG_INF)
        grams = ids.unfold(1, n, 1)  # (B, N - n + 1, n): every n-gram so far
        tail = ids[:, N - n + 1 :]  # (B, n - 1): the prefix the next token would complete
        match = (grams[:, :, :-1] == tail[:, None, :]).all(-1)  # (B, N - n + 1)
        match &= (grams >= 0).all(-1)  # padding (-1) is no token
        banned = torch.zeros_like(logits, dtype=torch.bool)
        rows, starts = match.nonzero(as_tuple=True)
        banned[rows, grams[rows, starts, -1]] = True
        return logits.masked_fill(banned, NEG_INF)


class Greedy:
    """Select the most likely token (a selector: ends a sampler chain)."""

    def __call__(self, ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        return logits

    def select(self, logits: torch.Tensor, rng) -> torch.Tensor:
        return logits.argmax(dim=-1)  # (B,); ties: the lowest id (torch.argmax)


class Sample:
    """Draw from the softmax with the call's seeded per-row generators (what a chain without a
    selector does; name it to make that explicit)."""

    def __call__(self, ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        return logits

    def select(self, logits: torch.Tensor, rng) -> torch.Tensor:
        return rng.sample(logits)
