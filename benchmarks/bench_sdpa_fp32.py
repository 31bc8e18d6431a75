"""attention.sdpa on bf16 inputs: in bf16 (torch's kernel as autocast would run it) against
sdpa(fp32=True) (upcast, attend in fp32, cast back), causal, forward and backward.

    python benchmarks/bench_sdpa_fp32.py [--rounds 7] [--threads 1]
    pytest benchmarks/bench_sdpa_fp32.py          # a short run of the same comparison

Whether fp32 pays depends on the device and the shape: on a CPU torch's flash kernel is slower
in bf16 for small heads and faster for long sequences of large heads. Both sides alternate
within each round (interleaved, so machine load falls on each); medians are printed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

import nima

SHAPES = [  # (B, H, N, D): gpt.gin's, the same d_model with fewer larger heads, long sequences
    (8, 8, 256, 16),
    (8, 4, 256, 32),
    (8, 2, 256, 64),
    (4, 8, 1024, 64),
]


def seconds(attn, q, k, v, grad, repeats: int) -> float:
    """Mean seconds of one forward and backward of `attn` on (q, k, v)."""
    start = time.perf_counter()
    for _ in range(repeats):
        attn(q, k, v, causal=True).backward(grad)
    return (time.perf_counter() - start) / repeats


def compare(shape: tuple[int, int, int, int], rounds: int, repeats: int = 3) -> dict[str, float]:
    """Median ms of sdpa in bf16 and of sdpa(fp32=True) on bf16 inputs of `shape`."""
    B, H, N, D = shape
    g = torch.Generator().manual_seed(0)
    # q, k, v as sliced from a fused projection: (B, N, H, D) memory viewed as (B, H, N, D)
    q, k, v = (
        torch.randn(B, N, H, D, generator=g).to(torch.bfloat16).transpose(1, 2).requires_grad_()
        for _ in range(3)
    )
    grad = torch.randn(B, H, N, D, generator=g).to(torch.bfloat16)
    sides = {
        "bf16": nima.get("attention", "sdpa")(),
        "fp32": nima.get("attention", "sdpa")(fp32=True),
    }
    times: dict[str, list[float]] = {name: [] for name in sides}
    for attn in sides.values():  # warm-up
        seconds(attn, q, k, v, grad, 1)
    for r in range(rounds):
        for name in sides if r % 2 == 0 else list(sides)[::-1]:
            times[name].append(seconds(sides[name], q, k, v, grad, repeats) * 1e3)
    return {name: statistics.median(t) for name, t in times.items()}


def test_sdpa_fp32_comparison_runs() -> None:
    result = compare((2, 2, 64, 16), rounds=1, repeats=1)
    assert all(ms > 0 for ms in result.values()), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"cpu, {args.threads} thread(s), causal, forward + backward, median of {args.rounds}:")
    print(f"  {'B, H, N, D':18s} {'bf16 ms':>9s} {'fp32 ms':>9s} {'bf16 / fp32':>12s}")
    for shape in SHAPES:
        ms = compare(shape, args.rounds)
        label = ", ".join(map(str, shape))
        print(f"  {label:18s} {ms['bf16']:9.2f} {ms['fp32']:9.2f} {ms['bf16'] / ms['fp32']:11.2f}x")


if __name__ == "__main__":
    sys.exit(main())
