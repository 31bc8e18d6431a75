"""Deterministic train/val/test splits of one text (in order) or of samples (seeded shuffle)."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import TypeVar

from nima.errors import ConfigError

T = TypeVar("T")
SPLIT_NAMES = ("train", "val", "test")


def check_fractions(fractions: Sequence[float], owner: str) -> tuple[float, ...]:
    """(train, val) or (train, val, test) fractions, each >= 0, summing to 1."""
    fractions = tuple(float(f) for f in fractions)
    if len(fractions) not in (2, 3) or min(fractions) < 0 or abs(sum(fractions) - 1) > 1e-6:
        raise ConfigError(
            f"{owner}: split fractions {fractions} are invalid; give (train, val) or "
            f"(train, val, test) fractions, each >= 0, summing to 1, e.g. (0.9, 0.1) or (0.8, 0.1, 0.1)."
        )
    if fractions[0] == 0:
        raise ConfigError(f"{owner}: split fractions {fractions}: the train fraction must be > 0.")
    return fractions


def _sizes(n: int, fractions: tuple[float, ...]) -> list[int]:
    """Sizes per split: int(fraction * n) for all but the last, which takes the rest."""
    sizes = [int(f * n) for f in fractions[:-1]]
    return [*sizes, n - sum(sizes)]


def split_text(text: str, fractions: Sequence[float], owner: str = "dataset") -> dict[str, str]:
    """Contiguous splits in order (as nanoGPT: the first 90% train, the last 10% val).

    A split whose fraction is 0 is left out.
    """
    fractions = check_fractions(fractions, owner)
    out, start = {}, 0
    for name, fraction, size in zip(
        SPLIT_NAMES, fractions, _sizes(len(text), fractions), strict=False
    ):
        if fraction > 0:
            out[name] = text[start : start + size]
        start += size
    return out


def split_samples(
    samples: Sequence[T], fractions: Sequence[float], seed: int, owner: str = "dataset"
) -> dict[str, list[T]]:
    """Samples shuffled with `seed` (same seed, same splits on every machine), then cut."""
    fractions = check_fractions(fractions, owner)
    order = list(range(len(samples)))
    random.Random(seed).shuffle(order)
    out, start = {}, 0
    for name, fraction, size in zip(
        SPLIT_NAMES, fractions, _sizes(len(samples), fractions), strict=False
    ):
        if fraction > 0:
            out[name] = [samples[i] for i in order[start : start + size]]
        start += size
    return out
