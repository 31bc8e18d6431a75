"""attention.triton against the float64 reference: outputs and dq/dk/dv on fixed edge cases and
fresh random shapes, every head dim, tails of any length, and a deterministic backward.

Without CUDA the kernels run on CPU tensors through the Triton interpreter (tests/conftest.py
sets TRITON_INTERPRET=1); fp16/bf16 (the interpreter does not widen bf16 dots) and large cases
are `gpu`-marked. Every output buffer is NaN-poisoned before each kernel run, so an element a
kernel forgets to write fails. Tolerances per dtype: nima.testing.attention.TOLERANCES.
"""

from __future__ import annotations

import os
import random

import nima_attention.triton_attention as kernels  # conftest set TRITON_INTERPRET before
import pytest
import torch
from nima_attention import TritonAttention

from nima.errors import CapabilityError
from nima.testing.attention import (
    DEFAULT_CASES,
    AttentionCase,
    check_attention_parity,
    make_inputs,
    random_cases,
)

CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"
# Fresh shapes each session; a failure prints the case and its seed (NIMA_TEST_SEED replays).
SEED = int(os.environ.get("NIMA_TEST_SEED", random.SystemRandom().randrange(10**6)))


@pytest.fixture(autouse=True)
def poison_outputs(monkeypatch):
    monkeypatch.setattr(kernels, "POISON_OUTPUTS", True)


def test_outputs_are_poisoned():
    assert torch.isnan(kernels._empty((3, 4), torch.float32, torch.device(DEVICE))).all()


def test_matches_reference_on_edge_cases():
    errors = check_attention_parity(TritonAttention(), cases=DEFAULT_CASES, device=DEVICE)
    print(f"triton float32 edge cases: {errors}")


def test_matches_reference_on_random_shapes():
    cases = random_cases(12, seed=SEED, max_len=80, head_dims=(16, 32, 64))
    errors = check_attention_parity(TritonAttention(), cases=cases, device=DEVICE, seed=SEED)
    print(f"triton float32 random cases (seed {SEED}): {errors}")


@pytest.mark.parametrize("head_dim", [16, 32, 64, 128, 8, 40, 96])  # the last three padded
def test_head_dims(head_dim):
    cases = [
        AttentionCase(1, 2, 1, 23, 31, head_dim, causal=True, padding="random"),
        AttentionCase(1, 2, 2, 18, 18, head_dim, causal=False, strided=True),
    ]
    check_attention_parity(TritonAttention(), cases=cases, device=DEVICE, seed=SEED)


@pytest.mark.parametrize("length", [1, 7, 129])
@pytest.mark.parametrize("causal", [False, True])
def test_tail_lengths(length, causal):
    cases = [AttentionCase(1, 2, 1, length, length, 16, causal=causal)]
    check_attention_parity(TritonAttention(), cases=cases, device=DEVICE, seed=SEED)


def test_backward_is_deterministic():
    case = AttentionCase(1, 4, 2, 45, 45, 32, causal=True, padding="random")
    grads = []
    for _ in range(2):
        q, k, v, mask = make_inputs(case, torch.float32, DEVICE, torch.Generator().manual_seed(3))
        out = TritonAttention()(q, k, v, causal=True, key_padding_mask=mask)
        grads.append(torch.autograd.grad(out, (q, k, v), torch.ones_like(out)))
    for first, second in zip(*grads, strict=True):
        assert torch.equal(first, second)


def test_cpu_needs_the_interpreter(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    q = torch.zeros(1, 1, 4, 16)
    with pytest.raises(CapabilityError, match="TRITON_INTERPRET=1"):
        TritonAttention()(q, q, q, causal=True)


# On a GPU: low precision, large shapes, repeated runs.

GPU_CASES = [
    AttentionCase(2, 8, 2, 1000, 1000, 64, causal=True, padding="random"),
    AttentionCase(1, 8, 8, 2048, 2048, 128, causal=False),
    AttentionCase(2, 16, 4, 1, 4099, 128, causal=True, strided=True),  # decode
    AttentionCase(1, 4, 1, 513, 1537, 64, causal=True, padding="empty"),  # chunked prefill
    AttentionCase(1, 6, 3, 777, 777, 96, causal=True, scale=0.2),
]


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
def test_large_shapes_on_gpu(dtype):
    errors = check_attention_parity(TritonAttention(), dtype=dtype, cases=GPU_CASES, device="cuda")
    print(f"triton {dtype} large cases: {errors}")


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_low_precision_edge_and_random_cases_on_gpu(dtype):
    cases = [*DEFAULT_CASES, *random_cases(30, seed=SEED, max_len=300, head_dims=(16, 64, 128))]
    check_attention_parity(TritonAttention(), dtype=dtype, cases=cases, device="cuda", seed=SEED)


@pytest.mark.gpu
def test_backward_is_deterministic_on_gpu():
    case = AttentionCase(4, 16, 4, 1024, 1024, 128, causal=True)
    q, k, v, _ = make_inputs(case, torch.bfloat16, "cuda", torch.Generator().manual_seed(0))
    attn = TritonAttention()
    do = torch.randn_like(q)
    first = torch.autograd.grad(attn(q, k, v, causal=True), (q, k, v), do)
    for _ in range(10):
        again = torch.autograd.grad(attn(q, k, v, causal=True), (q, k, v), do)
        assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))


@pytest.mark.gpu
def test_tf32_option_on_gpu():
    errors = check_attention_parity(
        TritonAttention(allow_tf32=True), cases=GPU_CASES[:2], device="cuda", tolerance=5e-3
    )
    print(f"triton float32 with tf32 dots: {errors}")


def test_bf16_on_the_cpu_interpreter_is_refused() -> None:
    """The interpreter computes bf16 dots wrongly: refuse instead of answering wrongly."""
    q = torch.randn(1, 2, 5, 16, dtype=torch.bfloat16)
    with pytest.raises(CapabilityError, match="bfloat16"):
        TritonAttention()(q, q, q, causal=True)


def test_fp16_on_the_interpreter() -> None:
    """float16 is declared for the CPU interpreter, so it is checked there too (small cases)."""
    cases = [DEFAULT_CASES[2], DEFAULT_CASES[4], DEFAULT_CASES[6]]  # GQA, chunked prefill, empty
    errors = check_attention_parity(
        TritonAttention(), dtype=torch.float16, cases=cases, device=DEVICE
    )
    print(f"fp16 worst relative errors: {errors}")
