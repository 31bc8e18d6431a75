"""A study's statistics: per-variant estimates and a t-test of each variant against the baseline.

- Estimate: mean, sample standard deviation (n - 1) and the 95% confidence interval of the mean,
  mean +- t(0.975, n - 1) * s / sqrt(n).
- Test: paired t-test (scipy's ttest_rel) when the variant and the baseline ran the same seeds,
  since a seed fixes the data order and the initial draws for both; otherwise Welch's t-test
  (ttest_ind, equal_var=False). Two-sided p-values.
- Effect size: Hedges' g, the difference of means (variant - baseline) over the pooled standard
  deviation of the two samples, times the small-sample correction 1 - 3 / (4 (n1 + n2) - 9).
  It is the same whichever test gave the p-value, so it reads as "how many seed-to-seed
  standard deviations apart".
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import scipy.stats

NAN = float("nan")


@dataclass(frozen=True)
class Estimate:
    """One variant's metric over its seeds."""

    n: int
    mean: float
    std: float  # NaN below 2 values
    ci_low: float
    ci_high: float


def estimate(values: Sequence[float], confidence: float = 0.95) -> Estimate:
    x = np.asarray(values, dtype=float)
    n = len(x)
    if n < 2:
        mean = float(x[0]) if n else NAN
        return Estimate(n, mean, NAN, NAN, NAN)
    mean, std = float(x.mean()), float(x.std(ddof=1))
    half = float(scipy.stats.t.ppf((1 + confidence) / 2, n - 1)) * std / math.sqrt(n)
    return Estimate(n, mean, std, mean - half, mean + half)


@dataclass(frozen=True)
class Comparison:
    """A variant against the baseline."""

    test: Literal["paired", "welch"]
    diff: float  # mean(variant) - mean(baseline)
    t: float
    df: float
    p: float
    hedges_g: float


def compare(variant: Mapping[int, float], baseline: Mapping[int, float]) -> Comparison | None:
    """Variant vs baseline, each a {seed: value}; None when either has fewer than 2 values."""
    if len(variant) < 2 or len(baseline) < 2:
        return None
    paired = set(variant) == set(baseline)
    seeds_a, seeds_b = sorted(variant), sorted(baseline)
    a = np.array([variant[s] for s in seeds_a], dtype=float)
    b = np.array([baseline[s] for s in seeds_b], dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):  # identical samples: NaN, not a warning
        result = (
            scipy.stats.ttest_rel(a, b) if paired else scipy.stats.ttest_ind(a, b, equal_var=False)
        )
    return Comparison(
        test="paired" if paired else "welch",
        diff=float(a.mean() - b.mean()),
        t=float(result.statistic),
        df=float(result.df),
        p=float(result.pvalue),
        hedges_g=hedges_g(a, b),
    )


def hedges_g(a: Sequence[float], b: Sequence[float]) -> float:
    """(mean(a) - mean(b)) / pooled sd, bias-corrected; NaN when both samples are constant."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    na, nb = len(a), len(b)
    pooled = math.sqrt(((na - 1) * a.var(ddof=1) + (nb - 1) * b.var(ddof=1)) / (na + nb - 2))
    if pooled == 0:
        return NAN
    return (1 - 3 / (4 * (na + nb) - 9)) * float(a.mean() - b.mean()) / pooled
