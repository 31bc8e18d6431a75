"""attention.triton against the float64 reference: outputs and dq/dk/dv on fixed edge cases and
random shapes, every head dim, tails of any length, every block config of the CUDA autotune
sweeps, tensors past 2^31 elements, and the autotune key.

Without CUDA the kernels run on CPU tensors through the Triton interpreter (tests/conftest.py
sets TRITON_INTERPRET=1); fp16/bf16 (the interpreter does not widen bf16 dots), large cases and
determinism (the interpreter runs programs one at a time: no race can show) are `gpu`-marked.
Every output buffer is NaN-poisoned before each kernel run, so an element a kernel forgets to
write fails. Tolerances per dtype: nima.testing.attention.TOLERANCES. Random shapes come from
the `test_seed` fixture: fixed, or NIMA_TEST_SEED.
"""

from __future__ import annotations

import os
import subprocess
import sys

import nima_attention.triton_attention as kernels  # conftest set TRITON_INTERPRET before
import pytest
import torch
import triton
from nima_attention import TritonAttention

from nima.errors import CapabilityError
from nima.testing.attention import (
    DEFAULT_CASES,
    DEFAULT_SEED,
    AttentionCase,
    check_attention_parity,
    make_inputs,
    random_cases,
    session_seed,
)

CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"


@pytest.fixture(autouse=True)
def poison_outputs(monkeypatch):
    monkeypatch.setattr(kernels, "POISON_OUTPUTS", True)


def test_outputs_are_poisoned():
    assert torch.isnan(kernels._empty((3, 4), torch.float32, torch.device(DEVICE))).all()


def test_matches_reference_on_edge_cases():
    errors = check_attention_parity(TritonAttention(), cases=DEFAULT_CASES, device=DEVICE)
    print(f"triton float32 edge cases: {errors}")


def test_matches_reference_on_random_shapes(test_seed):
    cases = random_cases(12, seed=test_seed, max_len=80, head_dims=(16, 32, 64))
    errors = check_attention_parity(TritonAttention(), cases=cases, device=DEVICE, seed=test_seed)
    print(f"triton float32 random cases (seed {test_seed}): {errors}")


def test_random_shapes_are_the_same_every_run():
    """A fixed default seed (CI reproduces a failure); NIMA_TEST_SEED draws other shapes."""
    assert session_seed({}) == DEFAULT_SEED
    assert session_seed({"NIMA_TEST_SEED": "1234"}) == 1234


@pytest.mark.parametrize("head_dim", [16, 32, 64, 128, 8, 40, 96])  # the last three padded
def test_head_dims(head_dim, test_seed):
    cases = [
        AttentionCase(1, 2, 1, 23, 31, head_dim, causal=True, padding="random"),
        AttentionCase(1, 2, 2, 18, 18, head_dim, causal=False, strided=True),
    ]
    check_attention_parity(TritonAttention(), cases=cases, device=DEVICE, seed=test_seed)


@pytest.mark.parametrize("length", [1, 7, 129])
@pytest.mark.parametrize("causal", [False, True])
def test_tail_lengths(length, causal, test_seed):
    cases = [AttentionCase(1, 2, 1, length, length, 16, causal=causal)]
    check_attention_parity(TritonAttention(), cases=cases, device=DEVICE, seed=test_seed)


# --- every config the CUDA autotune may pick --------------------------------------------------


def block_shapes(sweep: list[triton.Config]) -> list[triton.Config]:
    """One config per distinct (BLOCK_M, BLOCK_N) of a sweep: all the interpreter can tell apart
    (it ignores warps and stages)."""
    shapes = {}
    for config in sweep:
        shapes.setdefault((config.kwargs["BLOCK_M"], config.kwargs["BLOCK_N"]), config)
    return list(shapes.values())


def pinned(configs: kernels.Configs):
    """attention.triton with one config per kernel, instead of the autotuner's pick."""

    def attn(q, k, v, **kwargs):
        return kernels.triton_attention(q, k, v, configs=configs, **kwargs)

    return attn


# Several blocks of up to 128 rows, tails, full and partly masked blocks, empty rows, padding.
CONFIG_CASES = [
    AttentionCase(1, 2, 1, 150, 150, 16, causal=True),  # GQA, causal, tails for every block
    AttentionCase(1, 2, 2, 45, 200, 32, causal=True, padding="random"),  # chunked prefill
    AttentionCase(1, 1, 1, 140, 60, 16, causal=True),  # Nq > Nk: the first 80 rows see no key
    AttentionCase(2, 2, 2, 130, 130, 24, causal=False, padding="empty", strided=True),  # D padded
]
FWD, BWD_KV, BWD_Q = (block_shapes(s) for s in (kernels.FWD_SWEEP, kernels.BWD_KV_SWEEP,
                                                 kernels.BWD_Q_SWEEP))  # fmt: skip


def config_id(configs: kernels.Configs) -> str:
    return "-".join(
        f"{name}{c.kwargs['BLOCK_M']}x{c.kwargs['BLOCK_N']}w{c.num_warps}s{c.num_stages}"
        for name, c in zip(("fwd", "kv", "q"), configs, strict=True)
    )


def zip_sweeps(fwd, kv, q) -> list[kernels.Configs]:
    """Config i of each kernel (cycling the shorter lists): every config of every kernel runs."""
    n = max(len(fwd), len(kv), len(q))
    return [kernels.Configs(fwd[i % len(fwd)], kv[i % len(kv)], q[i % len(q)]) for i in range(n)]


@pytest.mark.parametrize("configs", zip_sweeps(FWD, BWD_KV, BWD_Q), ids=config_id)
def test_every_block_config_of_the_sweeps(configs):
    """CI (the interpreter) checks the masking and tails of every block shape CUDA may pick."""
    check_attention_parity(pinned(configs), cases=CONFIG_CASES, device=DEVICE)


@pytest.mark.gpu
@pytest.mark.parametrize(
    "configs",
    zip_sweeps(kernels.FWD_SWEEP, kernels.BWD_KV_SWEEP, kernels.BWD_Q_SWEEP),
    ids=config_id,
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_every_config_of_the_sweeps_on_gpu(configs, dtype):
    """Each config with its warps and stages, compiled: what the autotuner may pick."""
    cases = [*CONFIG_CASES, AttentionCase(2, 4, 2, 517, 517, 64, causal=True, padding="random")]
    check_attention_parity(pinned(configs), dtype=dtype, cases=cases, device="cuda")


# --- the autotune key and int64 offsets ---------------------------------------------------------


def test_length_buckets_are_powers_of_two():
    buckets = {n: kernels.length_bucket(n) for n in (1, 15, 16, 17, 33, 64, 65, 1000, 4099)}
    assert buckets == {1: 16, 15: 16, 16: 16, 17: 32, 33: 64, 64: 64, 65: 128, 1000: 1024,
                       4099: 8192}  # fmt: skip
    assert kernels.AUTOTUNE_KEY[:2] == ["N_Q_BUCKET", "N_K_BUCKET"]


def test_autotune_benchmarks_once_per_length_bucket(monkeypatch):
    """Decoding (Nk grows by one each step) must not re-benchmark the sweep at every length."""
    benchmarks = []

    def do_bench(kernel_call, quantiles):
        benchmarks.append(kernel_call)
        return [1.0, 1.0, 1.0]

    two = [triton.Config({"BLOCK_M": m, "BLOCK_N": n}, num_warps=4, num_stages=1)
           for m, n in ((32, 16), (16, 32))]  # fmt: skip
    tuned = triton.autotune(configs=two, key=kernels.AUTOTUNE_KEY, do_bench=do_bench)(
        kernels._attn_fwd.fn
    )
    monkeypatch.setattr(kernels, "_attn_fwd", tuned)
    for n_k in (33, 40, 64, 65, 100):  # buckets 64, 64, 64, 128, 128
        q, kv = torch.randn(1, 1, 1, 16), torch.randn(1, 1, n_k, 16)
        TritonAttention()(q, kv, kv, causal=True)
    assert len(tuned.cache) == 2 and len(benchmarks) == 2 * len(two)


# q, k and v as views into one 4-5 GiB fp16 buffer of which only the viewed pages are touched, so
# their offsets pass 2^31 elements without the memory: by batch (batch stride 2^30, batch 2
# starts at 2^31) or by row (row stride 2^26, row 32 starts at 2^31). Int32 offsets wrap
# there: the old kernels read outside the buffer (a segfault under the interpreter).
BIG_OFFSETS = """
import sys, torch, nima
from nima.testing.attention import TOLERANCES
device, layout = sys.argv[1], sys.argv[2]
B, H, N, D = (3, 2, 40, 16) if layout == "batch" else (1, 2, 37, 16)
size = H * N * D  # elements each of q, k and v really uses
if layout == "batch":
    strides, extent = (2**30, N * D, D, 1), 2 * 2**30
else:
    strides, extent = (0, D, 2**26, 1), (N - 1) * 2**26
storage = torch.empty(extent + 3 * H * D * N, dtype=torch.float16, device=device)
def view(i):
    t = storage.as_strided((B, H, N, D), strides, storage_offset=i * H * D)
    t.copy_(torch.randn(B, H, N, D, generator=torch.Generator().manual_seed(i)).half())
    return t.requires_grad_()
q, k, v = view(0), view(1), view(2)
out = nima.get("attention", "triton")()(q, k, v, causal=True)
grads = torch.autograd.grad(out, (q, k, v), torch.ones_like(out))
q64, k64, v64 = (t.detach().double().requires_grad_() for t in (q, k, v))
want = nima.get("attention", "reference")()(q64, k64, v64, causal=True)
wants = torch.autograd.grad(want, (q64, k64, v64), torch.ones_like(want))
for name, a, b in zip(("out", "dq", "dk", "dv"), (out, *grads), (want, *wants)):
    err = ((a.double() - b).abs().max() / b.abs().max()).item()
    assert err <= TOLERANCES[torch.float16], f"{layout}: {name} relative error {err}"
print("ok")
"""


@pytest.mark.parametrize("layout", ["batch", "row"])
def test_offsets_past_two_to_the_31_elements(layout):
    """Kernels address tensors of 2^31+ elements: int64 offsets, by batch/head and by row."""
    env = {**os.environ, "TRITON_INTERPRET": "1" if DEVICE == "cpu" else "0"}
    result = subprocess.run(
        [sys.executable, "-c", BIG_OFFSETS, DEVICE, layout],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0 and "ok" in result.stdout, (
        f"exit {result.returncode} (-11: segfault, an offset wrapped)\n{result.stderr[-3000:]}"
    )


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
def test_low_precision_edge_and_random_cases_on_gpu(dtype, test_seed):
    cases = [
        *DEFAULT_CASES,
        *random_cases(30, seed=test_seed, max_len=300, head_dims=(16, 64, 128)),
    ]
    check_attention_parity(
        TritonAttention(), dtype=dtype, cases=cases, device="cuda", seed=test_seed
    )


@pytest.mark.gpu
def test_backward_is_deterministic_on_gpu():
    """No atomics: 10 runs give bitwise equal gradients (only a GPU runs programs concurrently)."""
    case = AttentionCase(4, 16, 4, 1024, 1024, 128, causal=True, padding="random")
    q, k, v, mask = make_inputs(case, torch.bfloat16, "cuda", torch.Generator().manual_seed(0))
    attn = TritonAttention()
    do = torch.randn_like(q)

    def grads():
        return torch.autograd.grad(attn(q, k, v, causal=True, key_padding_mask=mask), (q, k, v), do)

    first = grads()
    for _ in range(10):
        assert all(torch.equal(a, b) for a, b in zip(first, grads(), strict=True))


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
