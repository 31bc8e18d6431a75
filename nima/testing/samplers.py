"""Conformance checks for sampler plugins: the rule each declares, on random logits.

A processor is called `processor(ids, logits) -> logits`: ids (B, N) the tokens so far, logits
(B, V), a ruled-out token getting -inf; a selector (`kind: selector`) also has
`select(logits, rng) -> ids (B,)`. The rule a plugin declares
(`rule` capability) is checked with the plugin's own parameter, read from the attribute named
after it: top_k `.k`, top_p `.p`, min_p `.min_p`, temperature `.temperature`, typical `.mass`,
the penalties `.penalty` (only the tokens seen in ids change), no_repeat_ngram `.n`.
"""

from __future__ import annotations

from typing import Any

import torch

VOCABS = (1, 2, 7, 50, 1000)


def random_rows(seed: int = 0):
    """(ids (B, N), logits (B, V)) for each vocabulary size: distinct logits of spread scales."""
    g = torch.Generator().manual_seed(seed)
    for vocab in VOCABS:
        scale = torch.tensor([[0.3], [1.0], [4.0]])  # flat, moderate and peaked rows
        logits = torch.randn(3, vocab, generator=g) * scale  # (B, V)
        ids = torch.randint(0, vocab, (3, 5), generator=g)  # (B, N) tokens so far
        yield ids, logits


def check_shape(processor: Any) -> None:
    """(B, V) float in, (B, V) of the same dtype out; the input left as it was; no NaN."""
    for ids, logits in random_rows():
        before = logits.clone()
        out = processor(ids, logits)
        assert out.shape == logits.shape and out.dtype == logits.dtype, (
            f"logits {tuple(logits.shape)} in, {out.dtype} {tuple(out.shape)} out"
        )
        assert torch.equal(logits, before), "the processor wrote into its input logits"
        assert not out.isnan().any(), "NaN in the output"


def _kept(out: torch.Tensor) -> torch.Tensor:
    return out > float("-inf")  # (B, V) bool


def check_rule(processor: Any, rule: str) -> None:
    """The declared rule holds on every row (see each branch)."""
    for ids, logits in random_rows(1):
        out = processor(ids, logits)
        probs = logits.softmax(-1)
        for row in range(logits.shape[0]):
            kept, p = _kept(out[row]), probs[row]
            V = p.numel()
            where = f"row {row} of V={V}"
            if rule == "temperature":
                want = logits[row] / processor.temperature
                assert torch.allclose(out[row], want), f"{where}: logits are not divided by T"
            elif rule == "top_k":
                k = min(processor.k, V)
                assert int(kept.sum()) == k, f"{where}: keeps {int(kept.sum())} tokens, k={k}"
                top = set(torch.topk(p, k).indices.tolist())
                assert set(kept.nonzero().flatten().tolist()) == top, (
                    f"{where}: the kept tokens are not the k={k} most likely"
                )
            elif rule == "top_p":
                order = torch.argsort(p, descending=True)
                n = int(kept.sum())
                assert kept[order[:n]].all(), f"{where}: the kept tokens are not the most likely"
                mass = p[order[:n]].sum().item()
                smaller = p[order[: n - 1]].sum().item()
                assert mass >= processor.p - 1e-6, (
                    f"{where}: the kept mass {mass:.4f} does not reach p={processor.p}"
                )
                assert smaller < processor.p, (
                    f"{where}: keeps {n} tokens, but the {n - 1} most likely already reach "
                    f"p={processor.p} ({smaller:.4f}): not the smallest set"
                )
            elif rule == "min_p":
                want = p >= processor.min_p * p.max()
                assert torch.equal(kept, want), f"{where}: keeps tokens below min_p * p_max"
            elif rule == "greedy":
                chosen = processor.select(out, None)
                assert torch.equal(chosen, logits.argmax(-1)), "select is not the argmax"
            elif rule in PENALTIES:
                want = _penalised(rule, processor, ids[row].tolist(), logits[row])
                assert torch.allclose(out[row], want), (
                    f"{where}: not the {rule} rule (only the tokens seen in ids change)"
                )
            elif rule == "no_repeat_ngram":
                banned = _completing(ids[row].tolist(), processor.n)
                want = logits[row].clone()
                want[sorted(banned)] = float("-inf")
                assert torch.equal(out[row], want), (
                    f"{where}: rules out {sorted((~kept).nonzero().flatten().tolist())}, the "
                    f"tokens completing an n-gram already in ids are {sorted(banned)}"
                )
            elif rule == "typical":
                _check_typical(kept, logits[row].double(), processor.mass, where)


PENALTIES = ("repetition_penalty", "frequency_penalty", "presence_penalty")


def _penalised(rule: str, processor: Any, seen: list[int], logits: torch.Tensor) -> torch.Tensor:
    """The penalty written out token by token: a token never seen keeps its logit."""
    want = logits.clone()
    pen = processor.penalty
    for token in set(seen):
        x = logits[token]
        if rule == "repetition_penalty":
            want[token] = x / pen if x > 0 else x * pen
        elif rule == "frequency_penalty":
            want[token] = x - pen * seen.count(token)
        else:
            want[token] = x - pen
    return want


def _completing(seen: list[int], n: int) -> set[int]:
    """The tokens that would complete an n-gram already in `seen` after its last n - 1."""
    if len(seen) < n:
        return set()
    tail = seen[len(seen) - n + 1 :]
    return {seen[i + n - 1] for i in range(len(seen) - n + 1) if seen[i : i + n - 1] == tail}


def _check_typical(kept: torch.Tensor, logits: torch.Tensor, mass: float, where: str) -> None:
    """The kept tokens are the most typical (surprisal closest to the entropy), the smallest
    such set whose probability reaches `mass`."""
    logp = logits.log_softmax(-1)
    p = logp.exp()
    entropy = -(p * logp).sum()
    order = torch.argsort((-logp - entropy).abs(), stable=True)  # most typical first
    n = int(kept.sum())
    assert kept[order[:n]].all(), f"{where}: the kept tokens are not the most typical"
    reached = p[order[:n]].sum().item()
    assert reached >= mass - 1e-6, f"{where}: the kept mass {reached:.4f} does not reach {mass}"
    before = p[order[: n - 1]].sum().item()
    assert before < mass + 1e-6, f"{where}: keeps {n} tokens, {n - 1} already reach {mass}"


def sampler_checks(entry, device: str) -> list:
    """A sampler plugin's checks, built with its defaults."""
    from nima.testing.kit import Check, maker

    make, rule = maker(entry), entry.capabilities.get("rule")
    return [
        Check("sampler", entry.name, "shape", "(B, V) logits in and out, input untouched, no NaN",
              True, lambda: check_shape(make())),
        Check("sampler", entry.name, "rule", f"the {rule} rule", rule is not None,
              lambda: check_rule(make(), rule)),
    ]  # fmt: skip
