"""Scores of generated text against references: exact match and chrF.

chrF (Popović 2015, "chrF: character n-gram F-score for automatic MT evaluation"; the defaults
of sacreBLEU's chrF): whitespace is removed, then for n = 1..6 the character n-grams of the
hypothesis and the reference are counted and matched (a multiset intersection). Precision and
recall are averaged over the orders n at which both texts have n-grams, and combined as
F_beta = (1 + beta^2) P R / (beta^2 P + R), beta = 2 (recall weighs more). Scores are 0..100.
The corpus score sums the n-gram counts over all pairs before dividing (sacreBLEU's corpus
chrF), so long answers weigh more than short ones.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

CHAR_ORDER, BETA = 6, 2.0


def _ngrams(text: str, n: int) -> Counter:
    return Counter(text[i : i + n] for i in range(len(text) - n + 1))


def chrf_statistics(hypothesis: str, reference: str, order: int = CHAR_ORDER) -> list[int]:
    """[hypothesis n-grams, reference n-grams, matches] for n = 1..order, flattened."""
    hyp, ref = re.sub(r"\s+", "", hypothesis), re.sub(r"\s+", "", reference)
    stats = []
    for n in range(1, order + 1):
        h, r = _ngrams(hyp, n), _ngrams(ref, n)
        stats += [sum(h.values()), sum(r.values()), sum((h & r).values())]
    return stats


def chrf_from_statistics(stats: Sequence[int], beta: float = BETA) -> float:
    """chrF (0..100) from summed chrf_statistics."""
    precision = recall = 0.0
    orders = 0
    for i in range(0, len(stats), 3):
        n_hyp, n_ref, n_match = stats[i : i + 3]
        if n_hyp > 0 and n_ref > 0:
            precision += n_match / n_hyp
            recall += n_match / n_ref
            orders += 1
    if orders == 0 or precision + recall == 0:
        return 0.0
    precision, recall = precision / orders, recall / orders
    b2 = beta**2
    return 100 * (1 + b2) * precision * recall / (b2 * precision + recall)


def chrf(hypothesis: str, reference: str, order: int = CHAR_ORDER, beta: float = BETA) -> float:
    """Sentence chrF (0..100) of one hypothesis against one reference."""
    return chrf_from_statistics(chrf_statistics(hypothesis, reference, order), beta)


def corpus_chrf(
    hypotheses: Sequence[str], references: Sequence[str], order: int = CHAR_ORDER,
    beta: float = BETA,
) -> float:  # fmt: skip
    """Corpus chrF (0..100): n-gram counts summed over every pair, then one score."""
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses for {len(references)} references")
    totals = [0] * (3 * order)
    for hyp, ref in zip(hypotheses, references, strict=True):
        totals = [a + b for a, b in zip(totals, chrf_statistics(hyp, ref, order), strict=True)]
    return chrf_from_statistics(totals, beta)


def exact_match(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """Fraction of hypotheses equal to their reference, surrounding whitespace aside."""
    if not references:
        return 0.0
    same = sum(h.strip() == r.strip() for h, r in zip(hypotheses, references, strict=True))
    return same / len(references)
