"""Sampler plugins: each processor against a direct computation, and their composition."""

from __future__ import annotations

import pytest
import torch

import nima
from nima.generate import SamplerChain


def sampler(name: str, *args):
    return nima.get("sampler", name)(*args)


def test_temperature_scales_logits() -> None:
    logits = torch.randn(3, 11)
    torch.testing.assert_close(sampler("temperature", 0.5)(logits), logits * 2)


def test_top_k_keeps_exactly_the_k_largest() -> None:
    logits = torch.randn(4, 50)
    out = sampler("top_k", 5)(logits)
    kept = torch.isfinite(out)
    assert kept.sum(dim=-1).tolist() == [5] * 4
    assert torch.equal(kept, logits >= logits.topk(5, dim=-1).values[:, -1:])


def test_top_p_keeps_the_smallest_set_reaching_p() -> None:
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    out = sampler("top_p", 0.7)(probs.log())
    assert torch.isfinite(out).tolist() == [[True, True, False, False]]  # 0.5 + 0.3 >= 0.7
    shuffled = sampler("top_p", 0.7)(probs.log()[:, [2, 0, 3, 1]])
    assert torch.isfinite(shuffled).tolist() == [[False, True, False, True]]


def test_greedy_selects_argmax_and_must_come_last() -> None:
    logits = torch.randn(5, 9)
    chain = SamplerChain([sampler("temperature", 0.7), sampler("greedy")])
    assert torch.equal(chain(logits), logits.argmax(-1))
    with pytest.raises(ValueError, match="must come last"):
        SamplerChain([sampler("greedy"), sampler("top_k", 3)])


def test_chain_samples_only_from_the_kept_tokens() -> None:
    logits = torch.randn(2, 30)
    chain = SamplerChain([sampler("top_k", 3)])
    generator = torch.Generator().manual_seed(0)
    allowed = logits.topk(3, dim=-1).indices
    for _ in range(50):
        ids = chain(logits, generator)
        assert all(ids[b] in allowed[b] for b in range(2))


@pytest.mark.parametrize("name,bad", [("temperature", 0.0), ("top_k", 0), ("top_p", 1.5)])
def test_bad_parameters_are_refused(name: str, bad) -> None:
    with pytest.raises(ValueError, match=name.split("_")[-1]):
        sampler(name, bad)
