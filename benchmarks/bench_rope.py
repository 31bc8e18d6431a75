"""RoPE: the fused Triton kernel side by side with the PyTorch `rope` reference.

    pytest benchmarks/bench_rope.py --benchmark-enable            # CPU: add TRITON_INTERPRET=1

Rows of one benchmark.group share shape, dtype, device and mode (forward or forward+backward).
On a CPU the Triton row runs in the interpreter: one round, checked for parity, and named
`triton-interpreter` because its time says nothing about the kernel's speed. On a shared CPU run
with OMP_NUM_THREADS=1: two OpenMP threads fighting other jobs for two cores made the small
PyTorch ops here about 100x slower (measured), which is noise, not a property of RoPE.
"""

from __future__ import annotations

import os

import pytest
import torch

CUDA = torch.cuda.is_available()
if not CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")

from nima_positional.rope import RoPE, RoPETriton, triton_devices  # noqa: E402

DEVICE = "cuda" if CUDA else "cpu"
# (B, H, Hkv, N, D)
SHAPES = (
    [(8, 32, 8, 2048, 128), (4, 32, 32, 4096, 64), (16, 16, 16, 1024, 64)]
    if CUDA
    else [(2, 8, 2, 128, 64)]
)
DTYPES = [torch.bfloat16, torch.float16] if CUDA else [torch.float32]
IMPLS = ["torch", "triton" if CUDA else "triton-interpreter"]


def sync() -> None:
    if CUDA:
        torch.cuda.synchronize()


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("mode", ["forward", "forward+backward"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "B{}_H{}_Hkv{}_N{}_D{}".format(*s))
def test_rope(benchmark, impl, mode, dtype, shape):
    B, H, Hkv, N, D = shape
    if impl != "torch" and DEVICE not in triton_devices():
        pytest.skip(f"Triton cannot run on {DEVICE} here (set TRITON_INTERPRET=1 for the CPU)")
    cls = RoPE if impl == "torch" else RoPETriton
    rope = cls(head_dim=D, max_len=N).to(DEVICE)
    make = dict(device=DEVICE, dtype=dtype, requires_grad=mode != "forward")
    q, k = torch.randn(B, H, N, D, **make), torch.randn(B, Hkv, N, D, **make)
    positions = torch.arange(N, device=DEVICE)
    angles = rope.prepare(positions)  # once per model forward; what each layer's rotate gets
    dq, dk = torch.randn_like(q), torch.randn_like(k)

    def run() -> tuple[torch.Tensor, torch.Tensor]:
        out = rope.rotate(q, k, angles)
        if mode != "forward":
            torch.autograd.backward(out, (dq, dk))
        sync()
        return out

    benchmark.group = f"rope {mode} {shape} {str(dtype).removeprefix('torch.')} {DEVICE}"
    benchmark.extra_info["bytes_moved"] = 2 * (q.numel() + k.numel()) * q.element_size()
    if impl == "triton-interpreter":
        benchmark.extra_info["note"] = "Triton interpreter: correctness only, not a speed"
        out = benchmark.pedantic(run, rounds=1, iterations=1)
    else:
        out = benchmark(run)
    ref = RoPE(head_dim=D, max_len=N).to(DEVICE).rotate(q.detach(), k.detach(), positions)
    for a, b in zip(out, ref, strict=True):
        torch.testing.assert_close(a, b, atol=0 if dtype == torch.float32 else 1e-2, rtol=1e-5)
