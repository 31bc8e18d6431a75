"""Attention implementations side by side on the same shapes (pytest-benchmark).

    pytest benchmarks/bench_attention.py --benchmark-enable [--benchmark-json=out.json]

Each group is one shape and pass (fwd or fwd+bwd), so the table reads as a comparison with
the reference. On CPU the rows are reference vs sdpa; the Triton row is skipped there because
the interpreter is a correctness tool (tests/test_triton_attention.py), not a timing. On CUDA
(bf16) the rows add triton, SDPA's flash and cuDNN backends and compiled FlexAttention.
NIMA_BENCH_QUICK=1 keeps a few small shapes. `nima bench attention` prints the same sweep
with TFLOP/s, speedups and peak memory.
"""

from __future__ import annotations

import os

import pytest
import torch

from nima.bench import default_shapes, implementations, prepare_call

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
DTYPE = torch.bfloat16 if DEVICE == "cuda" else torch.float32
SHAPES = default_shapes(DEVICE, quick=os.environ.get("NIMA_BENCH_QUICK") == "1")
IMPLS = implementations(DEVICE)


@pytest.mark.parametrize("impl", list(IMPLS))
@pytest.mark.parametrize("backward", [False, True], ids=["fwd", "fwd+bwd"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: s.label.replace(" ", "-"))
def test_attention(benchmark, shape, backward, impl):
    fn = IMPLS[impl]
    if isinstance(fn, str):
        pytest.skip(fn)
    pass_ = "fwd+bwd" if backward else "fwd"
    benchmark.group = f"attention {shape.label} {pass_} {str(DTYPE).removeprefix('torch.')}"
    call = prepare_call(fn, shape, DEVICE, DTYPE, backward)
    call()  # compile / autotune before timing
    benchmark(call)
    if benchmark.stats is not None:  # None under --benchmark-disable (a smoke run)
        flops = shape.forward_flops() * (3.5 if backward else 1.0)
        benchmark.extra_info["tflops"] = flops / benchmark.stats.stats.median / 1e12
