"""`nima bench attention`: every attention implementation on the same shapes, side by side.

Per shape and pass (forward, forward+backward): median time, TFLOP/s (4*B*H*Nq*Nk*D for the
forward, halved when causal; the backward counts 2.5x the forward), speedup vs the reference and
vs SDPA (its flash backend on CUDA, default dispatch on CPU) and peak memory above the inputs
(CUDA's max_memory_allocated; not measured on CPU, reported as n/a). Results go to
`<out_dir>/<device-name>/attention-<device-name>.json`.

On CPU the rows are reference vs sdpa: Triton there runs only through its interpreter, which is
a correctness tool, so its row says so instead of a time. On CUDA the rows add attention.triton,
SDPA's flash and cuDNN backends and compiled FlexAttention.

    from nima.bench import run_attention_bench, format_table
    print(format_table(run_attention_bench("cuda", "bfloat16", quick=True)))
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from nima.errors import ConfigError

AttnFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, bool], torch.Tensor]


@dataclass(frozen=True)
class BenchShape:
    """q (B, H, N, D), k and v (B, Hkv, N, D)."""

    batch: int
    heads: int
    kv_heads: int
    seq_len: int
    head_dim: int
    causal: bool

    @property
    def label(self) -> str:
        heads = f"H{self.heads}" + (f"/{self.kv_heads}" if self.kv_heads != self.heads else "")
        mask = "causal" if self.causal else "full"
        return f"B{self.batch} {heads} N{self.seq_len} D{self.head_dim} {mask}"

    def forward_flops(self) -> float:
        flops = 4.0 * self.batch * self.heads * self.seq_len**2 * self.head_dim
        return flops / 2 if self.causal else flops


def default_shapes(device: str, quick: bool = False) -> list[BenchShape]:
    """CPU: small enough for the explicit reference. CUDA: FlashAttention's sweep, batch x heads
    filling the chip (B*N = 16k tokens, H*D = 2048), N = 1k..16k, D = 64 and 128."""
    if device == "cpu":
        lengths, dims = ((128, 256), (64,)) if quick else ((256, 512, 1024), (64,))
        return [
            BenchShape(2, 8, kv, n, d, causal)
            for n in lengths
            for d in dims
            for causal in (False, True)
            for kv in (8,)
        ] + ([] if quick else [BenchShape(2, 8, 2, 512, 64, True)])
    lengths = (1024, 4096) if quick else (1024, 2048, 4096, 8192, 16384)
    dims = (128,) if quick else (64, 128)
    return [
        BenchShape(max(1, 16384 // n), 2048 // d, 2048 // d, n, d, causal)
        for d in dims
        for n in lengths
        for causal in (False, True)
    ]


def implementations(device: str) -> dict[str, AttnFn | str]:
    """name -> fn(q, k, v, causal); a string instead of a fn says why that row is not timed."""
    import nima

    impls: dict[str, AttnFn | str] = {}
    for name in ("reference", "sdpa"):
        attn = nima.get("attention", name)()
        impls[name] = lambda q, k, v, causal, attn=attn: attn(q, k, v, causal=causal)
    if device != "cuda":
        impls["triton"] = "interpreter only on CPU: correctness, not timed (tests/)"
        return impls
    from torch.nn.attention import SDPBackend, sdpa_kernel

    def backend(kind: SDPBackend) -> AttnFn:
        def run(q, k, v, causal):
            with sdpa_kernel(kind):
                gqa = q.shape[1] != k.shape[1]
                return F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=gqa)

        return run

    impls["sdpa_flash"] = backend(SDPBackend.FLASH_ATTENTION)
    impls["sdpa_cudnn"] = backend(SDPBackend.CUDNN_ATTENTION)
    impls["flex_compiled"] = _flex_attention()
    triton_attn = nima.get("attention", "triton")()
    impls["triton"] = lambda q, k, v, causal: triton_attn(q, k, v, causal=causal)
    return impls


def _flex_attention() -> AttnFn:
    """torch.compile(flex_attention) with a cached causal block mask per sequence length."""
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    flex = torch.compile(flex_attention, dynamic=False)
    masks: dict[tuple[int, int], Any] = {}

    def run(q, k, v, causal):
        block_mask = None
        if causal:
            key = (q.shape[2], k.shape[2])
            if key not in masks:
                offset = k.shape[2] - q.shape[2]  # bottom-right, as the NIMA contract
                masks[key] = create_block_mask(
                    lambda b, h, i, j: j <= i + offset, None, None, *key, device=q.device
                )
            block_mask = masks[key]
        return flex(q, k, v, block_mask=block_mask, enable_gqa=q.shape[1] != k.shape[1])

    return run


def device_name(device: str) -> str:
    """A path-safe device name: the GPU model on CUDA, the processor model on CPU."""
    if device == "cuda":
        raw = torch.cuda.get_device_name()
    else:
        raw = platform.processor() or platform.machine()
        cpuinfo = Path("/proc/cpuinfo")
        if cpuinfo.exists():
            found = re.search(r"model name\s*:\s*(.+)", cpuinfo.read_text())
            raw = found.group(1) if found else raw
        raw = f"cpu {raw}"
    return re.sub(r"[^a-z0-9]+", "-", raw.lower()).strip("-")


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _time_ms(fn: Callable[[], Any], min_time_s: float, max_reps: int = 100) -> float:
    """Median wall time of fn() in ms (fn synchronizes), after a warm-up (compile, autotune)."""
    fn()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < 3 or (time.perf_counter() - start < min_time_s and len(times) < max_reps):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def prepare_call(
    fn: AttnFn, shape: BenchShape, device: str, dtype: torch.dtype, backward: bool
) -> Callable[[], None]:
    """A no-argument call running one pass (fwd, or fwd+bwd) of fn on fixed random inputs."""
    g = torch.Generator().manual_seed(0)
    B, H, Hkv, N, D = shape.batch, shape.heads, shape.kv_heads, shape.seq_len, shape.head_dim

    def rand(*size: int) -> torch.Tensor:
        return torch.randn(*size, generator=g).to(device, dtype).requires_grad_(backward)

    q, k, v = rand(B, H, N, D), rand(B, Hkv, N, D), rand(B, Hkv, N, D)  # (B, H|Hkv, N, D)
    do = torch.randn(B, H, N, D, generator=g).to(device, dtype)

    def call() -> None:
        if backward:
            torch.autograd.grad(fn(q, k, v, shape.causal), (q, k, v), do)
        else:
            with torch.no_grad():
                fn(q, k, v, shape.causal)
        _sync(device)

    return call


def _measure(
    fn: AttnFn,
    shape: BenchShape,
    device: str,
    dtype: torch.dtype,
    backward: bool,
    min_time_s: float,
) -> tuple[float, float | None]:
    """(median ms, peak MiB above the inputs or None on CPU) of one pass of fn on shape."""
    call = prepare_call(fn, shape, device, dtype, backward)
    peak = None
    if device == "cuda":
        call()  # compile and autotune outside the memory measurement
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        call()
        peak = (torch.cuda.max_memory_allocated() - base) / 2**20
    return _time_ms(call, min_time_s), peak


def run_attention_bench(
    device: str | None = None,
    dtype: str | None = None,
    shapes: Sequence[BenchShape] | None = None,
    out_dir: str | Path | None = "benchmarks/results",
    *,
    quick: bool = False,
    plugins: Sequence[str] | None = None,
    min_time_s: float = 0.5,
) -> list[dict[str, Any]]:
    """Time every implementation on every shape, forward and forward+backward; write the JSON.

    device defaults to CUDA when present; dtype to bfloat16 on CUDA and float32 on CPU. Rows
    that cannot run (out of memory, a backend missing) carry a `status` instead of a time.
    """
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = dtype or ("bfloat16" if device == "cuda" else "float32")
    torch_dtype = getattr(torch, dtype)
    shapes = list(shapes) if shapes is not None else default_shapes(device, quick)
    impls = implementations(device)
    if plugins:
        impls = {name: fn for name, fn in impls.items() if name in plugins}
    rows: list[dict[str, Any]] = []
    for shape in shapes:
        for backward in (False, True):
            group: list[dict[str, Any]] = []
            for name, fn in impls.items():
                row = {
                    "shape": shape.label,
                    **asdict(shape),
                    "impl": name,
                    "pass": "fwd+bwd" if backward else "fwd",
                    "dtype": dtype,
                    "ms": None,
                    "tflops": None,
                    "peak_mib": None,
                    "status": "ok",
                }
                if isinstance(fn, str):
                    row["status"] = fn
                else:
                    try:
                        ms, peak = _measure(fn, shape, device, torch_dtype, backward, min_time_s)
                        flops = shape.forward_flops() * (3.5 if backward else 1.0)
                        row.update(ms=ms, tflops=flops / (ms * 1e-3) / 1e12, peak_mib=peak)
                    except torch.OutOfMemoryError:
                        row["status"] = "out of memory"
                    except Exception as exc:  # a backend this GPU/torch lacks: say so, go on
                        row["status"] = f"failed: {type(exc).__name__}: {str(exc)[:120]}"
                    finally:
                        if device == "cuda":
                            torch.cuda.empty_cache()
                group.append(row)
            _add_speedups(group)
            rows += group
    if out_dir is not None:
        write_json(rows, device, out_dir)
    return rows


def _add_speedups(group: list[dict[str, Any]]) -> None:
    """speedup = baseline time / row time, vs the reference and vs SDPA (flash on CUDA)."""
    times = {row["impl"]: row["ms"] for row in group}
    sdpa = "sdpa_flash" if times.get("sdpa_flash") else "sdpa"
    for row in group:
        for key, base in (("vs_reference", "reference"), ("vs_sdpa", sdpa)):
            ok = row["ms"] and times.get(base)
            row[key] = times[base] / row["ms"] if ok else None
        row["sdpa_baseline"] = sdpa


def results_path(device: str, out_dir: str | Path) -> Path:
    name = device_name(device)
    return Path(out_dir) / name / f"attention-{name}.json"


def write_json(rows: list[dict[str, Any]], device: str, out_dir: str | Path) -> Path:
    path = results_path(device, out_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "device": device,
        "device_name": torch.cuda.get_device_name() if device == "cuda" else device_name(device),
        "torch": torch.__version__,
        "triton": _version("triton"),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "flops": "fwd 4*B*H*N*N*D (halved when causal); fwd+bwd 3.5x fwd",
    }
    path.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    return path


def _version(package: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """A plain-text table, one block per shape and pass, implementations side by side."""

    def num(value: float | None, width: int, digits: int) -> str:
        return f"{'n/a':>{width}}" if value is None else f"{value:{width}.{digits}f}"

    header = (
        f"{'shape':<28} {'pass':<8} {'impl':<14} {'ms':>9} {'TFLOP/s':>8} "
        f"{'x ref':>7} {'x sdpa':>7} {'peak MiB':>9}  note"
    )
    lines = [header, "-" * len(header)]
    last = None
    for row in rows:
        key = (row["shape"], row["pass"])
        if last is not None and key != last:
            lines.append("")
        last = key
        note = "" if row["status"] == "ok" else row["status"]
        lines.append(
            f"{row['shape']:<28} {row['pass']:<8} {row['impl']:<14} {num(row['ms'], 9, 3)} "
            f"{num(row['tflops'], 8, 3)} {num(row['vs_reference'], 7, 2)} "
            f"{num(row['vs_sdpa'], 7, 2)} {num(row['peak_mib'], 9, 1)}  {note}".rstrip()
        )
    return "\n".join(lines)


def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `nima bench attention`."""
    parser.add_argument(
        "--device", choices=["cpu", "cuda"], default=None,
        help="default: cuda when available, else cpu",
    )  # fmt: skip
    parser.add_argument(
        "--dtype", choices=["float32", "float16", "bfloat16"], default=None,
        help="default: bfloat16 on cuda, float32 on cpu",
    )  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="a few small shapes only")
    parser.add_argument(
        "--out-dir", default="benchmarks/results",
        help="the JSON goes to OUT_DIR/<device-name>/attention-<device-name>.json",
    )  # fmt: skip
    parser.add_argument(
        "--impl", action="append", dest="plugins", default=None,
        help="only this implementation (repeatable)",
    )  # fmt: skip


def main_bench(args: argparse.Namespace) -> int:
    """Run the attention benchmark from parsed arguments; print the table and the JSON path."""
    if args.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: CUDA is not available here; use --device cpu.")
    rows = run_attention_bench(
        args.device, args.dtype, out_dir=args.out_dir, quick=args.quick, plugins=args.plugins
    )
    print(format_table(rows))
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    print(f"\nwrote {results_path(device, args.out_dir)}")
    return 0
