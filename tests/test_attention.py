"""Attention plugins: sdpa vs reference parity, contract properties shared by every built-in
(bottom-right causal, GQA, padding, empty rows), shape errors and registration.

The Triton kernel's own parity suite is tests/test_triton_attention.py; here it only takes
part in the contract properties and errors, on small shapes (CPU runs it under the interpreter).
"""

from __future__ import annotations

import os
import subprocess
import sys
from types import SimpleNamespace

import nima_attention.sdpa
import pytest
import torch
import torch.nn.functional as F

import nima
from nima.capabilities import triton_interpreter
from nima.errors import CapabilityError, ConfigError
from nima.testing.attention import (
    BIAS_CASES,
    DEFAULT_CASES,
    AttentionCase,
    check_attention_parity,
    random_cases,
)

PLUGINS = ["reference", "sdpa", "triton"]
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def build(name: str):
    return nima.get("attention", name)()


def rand(*shape: int, seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g).to(device=DEVICE, dtype=dtype)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
def test_sdpa_matches_reference(dtype):
    errors = check_attention_parity(build("sdpa"), dtype=dtype, device=DEVICE)
    print(f"sdpa {dtype}: {errors}")


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
def test_sdpa_matches_reference_on_random_shapes(dtype, test_seed):
    cases = random_cases(25, seed=test_seed, head_dims=(8, 16, 24, 64))
    check_attention_parity(build("sdpa"), dtype=dtype, cases=cases, device=DEVICE, seed=test_seed)


# --- additive bias (ALiBi, relative biases) ---------------------------------------------------


@pytest.mark.parametrize("name", ["reference", "sdpa"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16],
                         ids=str)  # fmt: skip
def test_bias_matches_reference(name, dtype, test_seed):
    """Every bias shape (1,H,Nq,Nk), (B,1,..), (B,H,..), (Nq,Nk) with causal, decode, padding and
    empty rows; the bias's own gradient included. The float64 reference is checked against an
    independent formula in test_reference_bias_is_added_to_the_scaled_scores."""
    cases = BIAS_CASES + tuple(c for c in random_cases(15, seed=test_seed, bias=True) if c.bias)
    errors = check_attention_parity(build(name), dtype=dtype, cases=cases, device=DEVICE)
    print(f"{name} bias {dtype}: {errors}")
    assert "dbias" in errors


def test_reference_bias_is_added_to_the_scaled_scores():
    """softmax(q k^T * scale + bias) v, written out with K/V repeated per query head."""
    q, k, v = rand(2, 4, 6, 8, seed=1), rand(2, 2, 9, 8, seed=2), rand(2, 2, 9, 8, seed=3)
    bias = rand(1, 4, 6, 9, seed=4)
    causal = torch.ones(6, 9, dtype=torch.bool, device=DEVICE).tril(diagonal=3)
    kr, vr = k.repeat_interleave(2, dim=1), v.repeat_interleave(2, dim=1)
    scores = q @ kr.transpose(-1, -2) * 0.3 + bias
    want = scores.masked_fill(~causal, -torch.inf).softmax(dim=-1) @ vr
    got = build("reference")(q, k, v, causal=True, scale=0.3, bias=bias)
    torch.testing.assert_close(got, want)


def test_a_zero_bias_changes_nothing():
    for case in DEFAULT_CASES:
        q = rand(case.batch, case.heads, case.q_len, case.head_dim, seed=1)
        k = rand(case.batch, case.kv_heads, case.k_len, case.head_dim, seed=2)
        v = rand(case.batch, case.kv_heads, case.k_len, case.head_dim, seed=3)
        zero = torch.zeros(1, case.heads, case.q_len, case.k_len, device=DEVICE)
        plain = build("sdpa")(q, k, v, causal=case.causal)
        torch.testing.assert_close(build("sdpa")(q, k, v, causal=case.causal, bias=zero), plain)


def test_bias_of_a_wrong_shape_is_refused():
    q = rand(2, 4, 5, 8)
    for name in PLUGINS:
        with pytest.raises(ValueError, match=r"broadcastable to \(B, H, Nq, Nk\) = \(2, 4, 5, 5\)"):
            build(name)(q, q, q, causal=True, bias=torch.zeros(3, 4, 5, 5, device=DEVICE))


def test_triton_declares_no_bias_and_refuses_one_naming_alternatives():
    assert nima.entry("attention", "triton").capabilities["bias"] is False
    assert all(nima.entry("attention", n).capabilities["bias"] for n in ("reference", "sdpa"))
    q = torch.zeros(1, 1, 4, 16, device=DEVICE)
    with pytest.raises(CapabilityError, match="attention.sdpa"):
        build("triton")(q, q, q, causal=True, bias=torch.zeros(1, 1, 4, 4, device=DEVICE))


# sdpa's causal paths when Nq != Nk: (Nq, Nk, what reaches SDPA as attn_mask)
SDPA_CAUSAL_PATHS = [
    (1, 1, "none"),
    (1, 45, "none"),  # one-token decode: the last query sees every key
    (13, 40, "causal_lower_right"),  # chunked prefill: fused bottom-right mask
    (37, 37, "is_causal"),
    (40, 17, "explicit"),  # Nq > Nk: the first 23 rows see no key and must give zeros
]


@pytest.mark.parametrize("n_q, n_k, path", SDPA_CAUSAL_PATHS)
def test_sdpa_causal_decode_and_prefill_keep_the_fused_kernels(monkeypatch, n_q, n_k, path):
    """No materialised mask where SDPA has a fused form: the flash/efficient kernels stay usable."""
    seen = []

    def spy(q, k, v, attn_mask=None, is_causal=False, **kwargs):
        seen.append((attn_mask, is_causal))
        return F.scaled_dot_product_attention(q, k, v, attn_mask, is_causal=is_causal, **kwargs)

    monkeypatch.setattr(nima_attention.sdpa, "F", SimpleNamespace(scaled_dot_product_attention=spy))
    q, k, v = rand(1, 4, n_q, 16, seed=1), rand(1, 2, n_k, 16, seed=2), rand(1, 2, n_k, 16, seed=3)
    build("sdpa")(q, k, v, causal=True)
    (mask, is_causal), kind = seen[0], type(seen[0][0]).__name__
    assert {
        "none": mask is None and not is_causal,
        "is_causal": mask is None and is_causal,
        "causal_lower_right": kind == "CausalBias" and not is_causal,
        "explicit": isinstance(mask, torch.Tensor) and mask.dtype == torch.bool,
    }[path], f"Nq={n_q}, Nk={n_k}: SDPA got attn_mask {kind}, is_causal={is_causal}"


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16],
                         ids=str)  # fmt: skip
def test_sdpa_causal_paths_match_reference(dtype):
    """Each causal path against the float64 reference, GQA and MQA, odd lengths, custom scale."""
    cases = [
        AttentionCase(2, 6, 2, n_q, n_k, 24, causal=True, strided=n_q % 2 == 1, scale=scale)
        for n_q, n_k, _ in SDPA_CAUSAL_PATHS
        for scale in (None, 0.3)
    ]
    cases += [
        AttentionCase(1, 3, 1, 1, 45, 64, causal=True),
        AttentionCase(1, 3, 1, 5, 70, 64, causal=True),
    ]
    errors = check_attention_parity(build("sdpa"), dtype=dtype, cases=cases, device=DEVICE)
    print(f"sdpa causal paths {dtype}: {errors}")


@pytest.mark.parametrize("name", ["reference", "sdpa"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_half_precision_matches_float64_reference(name, dtype):
    errors = check_attention_parity(build(name), dtype=dtype, device=DEVICE)
    print(f"{name} {dtype}: {errors}")


# --- sdpa(fp32=True): attend in fp32 whatever the input dtype -------------------------------


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_sdpa_fp32_matches_reference_in_half_precision(dtype, test_seed):
    """Masks, GQA, decode, bias and its gradient: within the dtype's tolerance, in its dtype."""
    cases = DEFAULT_CASES + BIAS_CASES + tuple(random_cases(15, seed=test_seed, bias=True))
    attn = nima.get("attention", "sdpa")(fp32=True)
    errors = check_attention_parity(attn, dtype=dtype, cases=cases, device=DEVICE, seed=test_seed)
    print(f"sdpa(fp32=True) {dtype}: {errors}")


@pytest.mark.parametrize("autocast", [False, True], ids=["plain", "autocast"])
def test_sdpa_fp32_attends_in_fp32_and_returns_the_input_dtype(autocast):
    """bf16 inputs give exactly fp32 attention rounded once at the end, also under autocast
    (which would otherwise run the kernel in bf16), and bf16 gradients."""
    q, k, v = (rand(2, 4, 33, 16, seed=s, dtype=torch.bfloat16).requires_grad_() for s in (1, 2, 3))
    want = build("sdpa")(q.float(), k.float(), v.float(), causal=True).to(torch.bfloat16)
    with torch.autocast(DEVICE, dtype=torch.bfloat16, enabled=autocast):
        got = nima.get("attention", "sdpa")(fp32=True)(q, k, v, causal=True)
        in_bf16 = build("sdpa")(q, k, v, causal=True)
    assert got.dtype == torch.bfloat16
    assert torch.equal(got, want)
    assert not torch.equal(in_bf16, want)  # the test can tell the two paths apart
    got.float().sum().backward()
    assert q.grad.dtype == k.grad.dtype == v.grad.dtype == torch.bfloat16


@pytest.mark.skipif(DEVICE != "cpu", reason="fp32='cpu' upcasts CPU tensors only")
def test_sdpa_fp32_cpu_upcasts_cpu_tensors():
    q, k, v = (rand(2, 4, 33, 16, seed=s, dtype=torch.bfloat16) for s in (1, 2, 3))
    on_cpu = nima.get("attention", "sdpa")(fp32="cpu")(q, k, v, causal=True)
    assert torch.equal(on_cpu, nima.get("attention", "sdpa")(fp32=True)(q, k, v, causal=True))
    assert not torch.equal(on_cpu, build("sdpa")(q, k, v, causal=True))


@pytest.mark.parametrize("value", ["CPU", "gpu", 1.0, None])
def test_sdpa_fp32_takes_true_false_or_cpu(value):
    with pytest.raises(ConfigError, match=r"True .* False .* or 'cpu'"):
        nima.get("attention", "sdpa")(fp32=value)


@pytest.mark.parametrize("with_bias", [False, True], ids=["plain", "bias"])
def test_sdpa_fp32_under_autocast_keeps_fp32_inputs_in_fp32(with_bias):
    q, k, v = (rand(2, 4, 17, 8, seed=s) for s in (1, 2, 3))
    bias = {"bias": rand(1, 4, 17, 17, seed=4, dtype=torch.bfloat16)} if with_bias else {}
    want = build("sdpa")(q, k, v, causal=True, **bias)
    with torch.autocast(DEVICE, dtype=torch.bfloat16):
        got = nima.get("attention", "sdpa")(fp32=True)(q, k, v, causal=True, **bias)
        assert build("sdpa")(q, k, v, causal=True).dtype == torch.bfloat16  # autocast's policy
    assert got.dtype == torch.float32 and torch.equal(got, want)


@pytest.mark.parametrize("name", PLUGINS)
def test_decode_and_chunked_prefill_are_the_last_rows_of_full_causal(name):
    """Bottom-right alignment: Nq queries at the end see exactly what they see in the full pass."""
    attn = build(name)
    q, k, v = rand(2, 4, 21, 16, seed=1), rand(2, 2, 21, 16, seed=2), rand(2, 2, 21, 16, seed=3)
    full = attn(q, k, v, causal=True)
    for n_q in (1, 5):
        part = attn(q[:, :, -n_q:], k, v, causal=True)
        torch.testing.assert_close(part, full[:, :, -n_q:], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", PLUGINS)
def test_gqa_equals_repeated_kv(name):
    attn = build(name)
    q, k, v = rand(1, 6, 9, 16, seed=4), rand(1, 2, 13, 16, seed=5), rand(1, 2, 13, 16, seed=6)
    grouped = attn(q, k, v, causal=True)
    repeated = attn(q, k.repeat_interleave(3, 1), v.repeat_interleave(3, 1), causal=True)
    torch.testing.assert_close(grouped, repeated, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", PLUGINS)
def test_padded_keys_act_as_removed(name):
    attn = build(name)
    q, k, v = rand(1, 2, 7, 16, seed=7), rand(1, 2, 11, 16, seed=8), rand(1, 2, 11, 16, seed=9)
    keep = torch.tensor([[1, 0, 1, 1, 0, 0, 1, 1, 1, 0, 1]], dtype=torch.bool, device=DEVICE)
    masked = attn(q, k, v, causal=False, key_padding_mask=keep)
    removed = attn(q, k[:, :, keep[0]], v[:, :, keep[0]], causal=False)
    torch.testing.assert_close(masked, removed, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", PLUGINS)
def test_rows_without_keys_give_zeros_and_zero_grads(name):
    attn = build(name)
    q, k, v = (rand(2, 2, n, 16, seed=s).requires_grad_() for n, s in ((6, 10), (4, 11), (4, 12)))
    keep = torch.tensor([[False] * 4, [True, False, True, True]], device=DEVICE)
    out = attn(q, k, v, causal=True, key_padding_mask=keep)  # Nq > Nk: rows 0, 1 see no key
    out.sum().backward()
    for t in (out, q.grad, k.grad, v.grad):
        assert torch.isfinite(t).all()
    assert torch.all(out[0] == 0) and torch.all(q.grad[0] == 0)
    assert torch.all(out[1, :, :2] == 0) and torch.all(q.grad[1, :, :2] == 0)
    assert torch.all(k.grad[0] == 0) and torch.all(v.grad[0] == 0)
    assert out[1, :, 2:].abs().sum() > 0


BAD_SHAPES = [
    ((2, 4, 8, 16), (2, 4, 8), (2, 4, 8), None, "4-D"),
    ((2, 4, 8, 16), (2, 3, 8, 16), (2, 3, 8, 16), None, "multiple of key/value heads"),
    ((2, 4, 8, 16), (2, 2, 8, 32), (2, 2, 8, 32), None, "head dim"),
    ((2, 4, 8, 16), (1, 2, 8, 16), (1, 2, 8, 16), None, "batch"),
    ((2, 4, 8, 16), (2, 2, 8, 16), (2, 2, 9, 16), None, "same shape"),
    ((2, 4, 8, 16), (2, 2, 8, 16), (2, 2, 8, 16), (2, 9), "key_padding_mask"),
]


@pytest.mark.parametrize("name", PLUGINS)
@pytest.mark.parametrize("q_shape, k_shape, v_shape, mask_shape, says", BAD_SHAPES)
def test_bad_shapes_raise_clear_errors(name, q_shape, k_shape, v_shape, mask_shape, says):
    q, k, v = torch.zeros(q_shape), torch.zeros(k_shape), torch.zeros(v_shape)
    mask = None if mask_shape is None else torch.ones(mask_shape, dtype=torch.bool)
    with pytest.raises(ValueError, match=says) as info:
        build(name)(q, k, v, causal=False, key_padding_mask=mask)
    assert str(tuple(q_shape)) in str(info.value) or str(mask_shape) in str(info.value)
    assert f"attention.{name}" in str(info.value)


def test_non_bool_mask_is_refused():
    q = torch.zeros(1, 2, 3, 16)
    with pytest.raises(ValueError, match="bool"):
        build("reference")(q, q, q, causal=False, key_padding_mask=torch.ones(1, 3))


def test_registered_with_capabilities():
    names = {e.name: e for e in nima.plugins("attention")}
    assert {"reference", "sdpa", "triton"} <= set(names)
    for name in PLUGINS:
        caps = names[name].capabilities
        assert caps["backward"] and "float32" in caps["dtypes"]
    triton_devices = names["triton"].capabilities["devices"]
    assert "cuda" in triton_devices
    assert ("cpu" in triton_devices) == triton_interpreter()
    assert "bfloat16" not in names["triton"].capabilities["dtypes_by_device"]["cpu"]
    assert "float64" not in names["triton"].capabilities["dtypes"]


def test_triton_refuses_float64_naming_alternatives():
    q = torch.zeros(1, 1, 4, 16, dtype=torch.float64, device=DEVICE)
    with pytest.raises(CapabilityError, match="attention.reference"):
        build("triton")(q, q, q, causal=True)


def _python(code: str, **env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"} | env
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environ)


def test_import_does_not_set_triton_interpret():
    code = (
        "import os, sys, nima, nima_attention\n"
        "caps = nima.entry('attention', 'triton').capabilities\n"
        "assert 'TRITON_INTERPRET' not in os.environ\n"
        "assert caps['devices'] == ['cuda'], caps\n"
        "assert 'triton' not in sys.modules, 'triton imported eagerly'\n"
    )
    result = _python(code)
    assert result.returncode == 0, result.stderr


def test_package_works_without_triton():
    code = (
        "import sys; sys.modules['triton'] = None\n"  # `import triton` now fails
        "import nima, torch\n"
        "from nima.errors import CapabilityError\n"
        "assert nima.entry('attention', 'triton').capabilities['devices'] == []\n"
        "q = torch.randn(1, 2, 3, 16)\n"
        "nima.get('attention', 'sdpa')()(q, q, q, causal=True)\n"
        "try:\n"
        "    nima.get('attention', 'triton')()(q, q, q, causal=True)\n"
        "except CapabilityError as e:\n"
        "    assert 'not installed' in str(e), e\n"
        "else:\n"
        "    raise AssertionError('triton attention ran without triton')\n"
    )
    result = _python(code, TRITON_INTERPRET="1")
    assert result.returncode == 0, result.stderr


def test_parity_check_catches_a_wrong_kernel():
    """The conformance kit must be able to fail: a top-left causal mask is caught."""
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def top_left(q, k, v, *, causal, scale=None, key_padding_mask=None):
        return sdpa(q, k, v, is_causal=causal, scale=scale, enable_gqa=True)

    case = AttentionCase(1, 2, 2, 3, 9, 16, causal=True)
    with pytest.raises(AssertionError, match="seed"):
        check_attention_parity(top_left, cases=[case])
