"""Sampler plugins (contract v2: processor(ids, logits)): each against a direct computation, and
the properties of the family (hypothesis): top_k keeps exactly k (ties: lower ids), top_p keeps
the smallest set reaching p, min_p, temperature -> 0 is greedy, penalties touch only tokens
already seen, seeded sampling repeats and a row samples as it would alone."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import nima
from nima.generate import RowRandom, SamplerChain, token_counts

NEG_INF = float("-inf")
SETTINGS = settings(max_examples=60, deadline=None)


def sampler(name: str, *args):
    return nima.get("sampler", name)(*args)


@st.composite
def rows(draw, max_vocab: int = 12, ties: bool = True):
    """(ids (B, N) with -1 left padding, logits (B, V) float32): few distinct values, so ties."""
    B = draw(st.integers(1, 3))
    V = draw(st.integers(1, max_vocab))
    N = draw(st.integers(0, 6))
    values = st.sampled_from([-2.0, -1.0, 0.0, 0.5, 1.0, 3.0]) if ties else st.floats(-5, 5)
    logits = torch.tensor(draw(st.lists(st.lists(values, min_size=V, max_size=V), min_size=B,
                                        max_size=B)), dtype=torch.float32)  # fmt: skip
    ids = torch.tensor(draw(st.lists(st.lists(st.integers(0, V - 1), min_size=N, max_size=N),
                                     min_size=B, max_size=B)), dtype=torch.long)  # fmt: skip
    ids = ids.reshape(B, N)
    pad = draw(st.integers(0, N))
    ids[:, :pad] = -1  # left padding
    return ids, logits


def kept(out: torch.Tensor) -> torch.Tensor:
    return out > NEG_INF


@SETTINGS
@given(rows(), st.integers(1, 14))
def test_top_k_keeps_exactly_k_ties_going_to_lower_ids(data, k: int) -> None:
    ids, logits = data
    out = sampler("top_k", k)(ids, logits)
    V = logits.size(1)
    assert (kept(out).sum(-1) == min(k, V)).all()
    for row, keep in zip(logits.tolist(), kept(out).tolist(), strict=True):
        ranked = sorted(range(V), key=lambda i: (-row[i], i))  # by value, ties by id
        assert {i for i in range(V) if keep[i]} == set(ranked[: min(k, V)])
    assert torch.equal(out[kept(out)], logits[kept(out)])  # kept logits untouched


@SETTINGS
@given(rows(ties=False), st.floats(0.01, 1.0))
def test_top_p_keeps_the_smallest_set_reaching_p(data, p: float) -> None:
    ids, logits = data
    out = sampler("top_p", p)(ids, logits)
    probs = logits.softmax(-1)
    for row_p, keep in zip(probs, kept(out), strict=True):
        inside = row_p[keep]
        assert inside.sum() >= p - 1e-5 or keep.all()  # reaches p
        if keep.sum() > 1:  # and is the smallest: without its least likely token it does not
            assert inside.sum() - inside.min() < p + 1e-6
        assert row_p[keep].min() >= row_p[~keep].max() if (~keep).any() else True


@SETTINGS
@given(rows(ties=False), st.floats(0.001, 1.0))
def test_min_p_keeps_tokens_within_a_factor_of_the_top(data, min_p: float) -> None:
    ids, logits = data
    out = sampler("min_p", min_p)(ids, logits)
    probs = logits.softmax(-1)
    expected = probs >= min_p * probs.max(-1, keepdim=True).values
    # equal except within float rounding of the threshold
    near = (probs - min_p * probs.max(-1, keepdim=True).values).abs() < 1e-6
    assert ((kept(out) == expected) | near).all()
    assert kept(out).any(-1).all()


@SETTINGS
@given(rows(ties=False), st.integers(0, 2**31))
def test_temperature_towards_zero_is_greedy(data, seed: int) -> None:
    ids, logits = data
    top2 = logits.topk(min(2, logits.size(1)), dim=-1).values
    if logits.size(1) > 1 and ((top2[:, 0] - top2[:, 1]) < 1e-3).any():
        return  # a near tie: both are greedy
    chain = SamplerChain([sampler("temperature", 1e-4)])
    rng = RowRandom([seed + i for i in range(logits.size(0))])
    assert torch.equal(chain(ids, logits, rng), logits.argmax(-1))


@SETTINGS
@given(rows(ties=False), st.integers(0, 2**31))
def test_a_tiny_temperature_is_greedy_not_nan(data, seed: int) -> None:
    ids, logits = data
    if logits.size(1) > 1 and (logits.topk(2, dim=-1).values.diff(dim=-1) == 0).any():
        return  # an exact tie: both are greedy
    out = sampler("temperature", 1e-39)(ids, logits)
    assert not out.isnan().any()
    chain = SamplerChain([sampler("temperature", 1e-39)])
    rng = RowRandom([seed + i for i in range(logits.size(0))])
    assert torch.equal(chain(ids, logits, rng), logits.argmax(-1))


@pytest.mark.parametrize(
    "name,value",
    [
        ("repetition_penalty", 1.5),
        ("repetition_penalty", 0.7),
        ("frequency_penalty", 0.8),
        ("frequency_penalty", -1.0),
        ("presence_penalty", 1.2),
        ("no_repeat_ngram", 1),
        ("no_repeat_ngram", 2),
    ],  # fmt: skip
)
@SETTINGS
@given(data=rows(ties=False))
def test_penalties_touch_only_tokens_already_seen(name: str, value, data) -> None:
    ids, logits = data
    out = sampler(name, value)(ids, logits)
    seen = token_counts(ids, logits.size(1)) > 0
    assert torch.equal(out[~seen], logits[~seen])


def test_penalties_against_direct_computation() -> None:
    ids = torch.tensor([[-1, 2, 2, 0], [1, 1, 1, 3]])  # row 0 left-padded
    logits = torch.tensor([[2.0, -1.0, 4.0, -3.0], [1.0, -2.0, 0.5, 3.0]])
    out = sampler("repetition_penalty", 2.0)(ids, logits)
    torch.testing.assert_close(out, torch.tensor([[1.0, -1.0, 2.0, -3.0], [1.0, -4.0, 0.5, 1.5]]))
    out = sampler("frequency_penalty", 0.5)(ids, logits)
    torch.testing.assert_close(out, logits - 0.5 * torch.tensor([[1, 0, 2, 0], [0, 3, 0, 1.0]]))
    out = sampler("presence_penalty", 0.5)(ids, logits)
    torch.testing.assert_close(out, logits - 0.5 * torch.tensor([[1, 0, 1, 0], [0, 1, 0, 1.0]]))


def test_no_repeat_ngram_bans_what_would_complete_a_seen_ngram() -> None:
    ids = torch.tensor([[5, 1, 2, 3, 1, 2], [-1, -1, 1, 2, 4, 1]])
    out = sampler("no_repeat_ngram", 3)(ids, torch.zeros(2, 6))
    # row 0 ends "1 2": "1 2 3" was seen, so 3 is banned; row 1 ends "4 1": no "4 1 x" yet
    assert kept(out).tolist() == [[True, True, True, False, True, True], [True] * 6]
    out = sampler("no_repeat_ngram", 2)(ids, torch.zeros(2, 6))
    assert kept(out)[1].tolist() == [True, True, False, True, True, True]  # "1 2" was seen


def test_typical_keeps_the_tokens_closest_to_the_entropy() -> None:
    probs = torch.tensor([[0.4, 0.3, 0.2, 0.1]])
    logp = probs.log()
    entropy = -(probs * logp).sum()
    order = (-logp - entropy).abs()[0].argsort().tolist()
    out = sampler("typical", 0.5)(torch.zeros(1, 0, dtype=torch.long), logp)
    cum, expected = 0.0, set()
    for i in order:  # the most typical first, until the mass reaches 0.5
        expected.add(i)
        cum += probs[0, i].item()
        if cum >= 0.5:
            break
    assert {i for i, k in enumerate(kept(out)[0].tolist()) if k} == expected


@SETTINGS
@given(rows(ties=False), st.integers(0, 2**31))
def test_seeded_sampling_repeats_and_rows_sample_as_alone(data, seed: int) -> None:
    ids, logits = data
    chain = SamplerChain([sampler("top_k", 3), sampler("sample")])
    B = logits.size(0)
    first = [chain(ids, logits, RowRandom([seed + i for i in range(B)])) for _ in range(2)]
    assert torch.equal(first[0], first[1])
    for i in range(B):
        alone = chain(ids[i : i + 1], logits[i : i + 1], RowRandom([seed + i]))
        assert alone.item() == first[0][i].item()
    allowed = kept(sampler("top_k", 3)(ids, logits))  # (B, V)
    assert allowed.gather(1, first[0][:, None]).all()


def test_sampling_follows_the_distribution() -> None:
    logits = torch.tensor([[0.0, 1.0, 2.0]]).log_softmax(-1).expand(4000, 3).contiguous()
    draws = RowRandom(range(4000)).sample(logits)  # 4000 rows, one draw each
    freq = torch.bincount(draws, minlength=3).float() / 4000
    torch.testing.assert_close(freq, logits[0].softmax(-1), atol=0.03, rtol=0)


def test_greedy_selects_argmax_and_must_come_last() -> None:
    logits = torch.randn(5, 9)
    ids = torch.zeros(5, 0, dtype=torch.long)
    chain = SamplerChain([sampler("temperature", 0.7), sampler("greedy")])
    assert torch.equal(chain(ids, logits), logits.argmax(-1))
    with pytest.raises(ValueError, match="must come last"):
        SamplerChain([sampler("greedy"), sampler("top_k", 3)])
    with pytest.raises(ValueError, match="sampler.top_k\\(\\)"):
        SamplerChain([nima.get("sampler", "top_k")])  # the class, not an instance


@pytest.mark.parametrize(
    "name,bad",
    [
        ("temperature", 0.0),
        ("top_k", 0),
        ("top_p", 1.5),
        ("min_p", 0.0),
        ("typical", 2.0),
        ("repetition_penalty", -1.0),
        ("frequency_penalty", 3.0),
        ("presence_penalty", -2.5),
        ("no_repeat_ngram", 0),
    ],  # fmt: skip
)
def test_bad_parameters_are_refused(name: str, bad) -> None:
    with pytest.raises(ValueError, match="not"):
        sampler(name, bad)


def test_a_first_contract_processor_still_works() -> None:
    """A processor written as (logits) -> logits (the first contract) is called with the logits."""
    ids, logits = torch.zeros(2, 3, dtype=torch.long), torch.randn(2, 9)
    chain = SamplerChain([lambda logits: -logits, sampler("greedy")])
    assert torch.equal(chain(ids, logits), (-logits).argmax(-1))


def test_the_contract_is_read_from_the_required_arguments() -> None:
    """A first-contract processor with a defaulted setting is still called with the logits."""
    ids, logits = torch.zeros(2, 3, dtype=torch.long), torch.randn(2, 9)

    class Scale:  # v1, a defaulted second parameter
        def __call__(self, logits, scale=-1.0):
            return logits * scale

    def v1_rest(logits, *rest):
        return -logits

    def v2_args(*args):
        return -args[1]

    def v2_defaults(ids=None, logits=None):
        return -logits

    for processor in (Scale(), v1_rest, v2_args, v2_defaults):
        chain = SamplerChain([processor, sampler("greedy")])
        assert torch.equal(chain(ids, logits), (-logits).argmax(-1)), processor
