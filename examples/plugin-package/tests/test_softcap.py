"""Conformance tests for attention.softcap, written as any plugin author would write them.

nima.testing.attention.check_attention_parity runs a plugin over the family's contract cases
(GQA/MQA, odd lengths, Nq != Nk bottom-right causal, key padding, rows with no visible key,
strided inputs, a custom scale) and compares values and gradients with a float64 reference:
`attention.reference` by default, or any reference you pass, for behaviour the family's
reference does not have (here: the cap itself).
"""

from __future__ import annotations

import math
from importlib import metadata

import pytest
import torch
from nima.testing.attention import BIAS_CASES, DEFAULT_CASES, check_attention_parity, random_cases

from nima_example import SoftcapAttention, SoftcapError
from nima_example.reference import softcap_reference

CASES = list(DEFAULT_CASES) + list(BIAS_CASES) + random_cases(8, seed=7, bias=True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_no_cap_is_the_reference(dtype: torch.dtype) -> None:
    """cap = None skips the capping: the plugin must then match attention.reference."""
    check_attention_parity(SoftcapAttention(cap=None), dtype=dtype, cases=CASES)
    assert SoftcapAttention(cap=math.inf).cap is None  # inf is the same "no cap"


def test_large_cap_approaches_the_reference() -> None:
    """cap * tanh(s / cap) = s - s^3 / (3 cap^2) + ...: with logits up to ~20, a cap of 1e5
    moves them by < 1e-6."""
    worst = check_attention_parity(
        SoftcapAttention(cap=1e5), dtype=torch.float64, cases=CASES, tolerance=1e-6
    )
    assert worst["out"] > 0  # capped, so not bit-identical to plain attention


@pytest.mark.parametrize("cap", [1.0, 5.0, 50.0])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_capped_matches_explicit_formula(cap: float, dtype: torch.dtype) -> None:
    """Finite caps against the formula: values, gradients, masks and empty rows, every case."""
    check_attention_parity(
        SoftcapAttention(cap=cap), dtype=dtype, cases=CASES, reference=softcap_reference(cap)
    )


def test_cap_bounds_the_logits() -> None:
    """Whatever the scores, logits lie in (-cap, cap): no key gets more than e^(2 cap) times
    the weight of another, where plain attention would put all weight on one key."""
    cap = 1.0
    q = torch.randn(1, 2, 8, 16) * 100
    k, v = torch.randn(1, 2, 8, 16) * 100, torch.eye(8, 16).expand(1, 2, 8, 16)
    probs = SoftcapAttention(cap=cap)(q, k, v, causal=False)[..., :8]  # v = identity: out = P
    ratio = probs.amax(dim=-1) / probs.amin(dim=-1)  # per query row
    assert ratio.max() <= math.exp(2 * cap) * (1 + 1e-5)
    plain = SoftcapAttention(cap=None)(q, k, v, causal=False)[..., :8]
    assert plain.amax(dim=-1).min() > 0.99  # the same inputs saturate an uncapped softmax


@pytest.mark.parametrize("cap", [0.0, -1.0, float("nan")])
def test_bad_cap_is_refused(cap: float) -> None:
    with pytest.raises(SoftcapError, match="cap must be a positive number"):
        SoftcapAttention(cap=cap)


def test_registered_through_the_entry_point() -> None:
    """Once installed, NIMA finds the plugin via the `nima` entry point, not by import."""
    try:
        metadata.distribution("nima-example")
    except metadata.PackageNotFoundError:
        pytest.skip("nima-example is not installed (pip install ./examples/plugin-package)")
    import nima

    entry = nima.entry("attention", "softcap")
    assert entry.obj is SoftcapAttention
    assert entry.package == "nima-example"
    assert entry.capabilities["backward"] is True


@pytest.mark.parametrize(
    "k_heads, mask",
    [(3, None), (2, torch.ones(2, 5)), (2, torch.ones(2, 4, dtype=torch.bool))],
    ids=["heads-not-a-multiple", "float-mask", "mask-wrong-length"],
)
def test_contract_violations_are_named(k_heads: int, mask: torch.Tensor | None) -> None:
    q, k = torch.randn(2, 4, 3, 8), torch.randn(2, k_heads, 5, 8)
    with pytest.raises(SoftcapError, match="attention.softcap"):
        SoftcapAttention()(q, k, k, causal=True, key_padding_mask=mask)
