#!/usr/bin/env bash
# On a CUDA machine: the GPU parity tests, then the full attention benchmark; logs under $OUT.
#
#   OUT=/tmp/gpu benchmarks/gpu_run.sh [all|tests|bench] [--quick]
#
# tests: `pytest -m gpu` (bf16/fp16 and large-shape parity, deterministic backward, RoPE), then
#        the whole attention suite with CUDA tensors (native Triton, no interpreter).
# bench: bf16, B*N = 16k tokens, H*D = 2048, N = 1k..16k, D = 64 and 128, causal and not:
#        reference, sdpa, SDPA flash and cuDNN backends, compiled FlexAttention, attention.triton
#        and every other registered attention plugin (fwd and fwd+bwd; TFLOP/s, speedups, peak
#        memory). The JSON goes to benchmarks/results/<gpu>/attention-<gpu>.json, replacing the
#        committed file for this GPU; with --quick to $OUT/attention-<gpu>-quick.json instead.
# Each step is logged to $OUT/*.txt; nvidia-smi's report records the GPU model (SXM or PCIe).
set -euo pipefail

cd "$(dirname "$0")/.."
OUT="${OUT:-benchmarks/gpu-out}"
WHAT="${1:-all}"
QUICK="${2:-}"
mkdir -p "$OUT"
unset TRITON_INTERPRET  # native kernels; the interpreter is for CPU-only machines

python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device')"
nvidia-smi -q > "$OUT/nvidia-smi.txt" || true
nvidia-smi --query-gpu=name,memory.total,power.limit,clocks.max.sm --format=csv | tee "$OUT/gpu.txt"
# Offline-safe install of this checkout, so the built-in plugins' entry points are found.
python -c "import nima_attention" 2>/dev/null || pip install --no-deps --no-build-isolation -e . -q

status=0  # a failing test is reported (non-zero exit at the end) but the benchmark still runs
if [[ "$WHAT" == all || "$WHAT" == tests ]]; then
    python -m pytest -m gpu -v -s -p no:cacheprovider 2>&1 | tee "$OUT/pytest-gpu.txt" || status=1
    python -m pytest tests/test_attention.py tests/test_triton_attention.py -q -s \
        -p no:cacheprovider 2>&1 | tee "$OUT/pytest-attention-cuda.txt" || status=1
fi

if [[ "$WHAT" == all || "$WHAT" == bench ]]; then
    gpu=$(python -c "from nima.bench import device_name; print(device_name('cuda'))")
    if [[ "$QUICK" == --quick ]]; then
        results="$OUT/attention-$gpu-quick.json"  # a smoke run: never over the committed sweep
    else
        results="benchmarks/results/$gpu/attention-$gpu.json"  # the committed results, named
    fi
    python -m nima.cli bench attention --device cuda --dtype bfloat16 ${QUICK:+"$QUICK"} \
        --out "$results" 2>&1 | tee "$OUT/bench-attention.txt"
fi
exit $status
