"""`nima bench attention`: attention implementations on the same shapes, side by side.

Any registered attention plugin can be timed (third-party ones included), beside the reference
and, on CUDA, torch's own baselines: SDPA's flash and cuDNN backends and compiled FlexAttention.
Per shape and pass (forward, forward+backward): median time, TFLOP/s (4*B*H*Nq*Nk*D for the
forward, halved when causal; the backward counts 2.5x the forward), speedup vs the reference and
vs SDPA (its flash backend on CUDA, the sdpa plugin elsewhere) and peak memory above the inputs
(CUDA's max_memory_allocated; not measured on CPU, reported as n/a).

A plugin is timed only where it declares the device and dtype (nima.capabilities); one that runs
there only through an interpreter (Triton on CPU) is a correctness tool and is not timed. Each
skipped implementation is named once, with the reason. The JSON goes where `--out` says, else to
a fresh `runs/bench-attention-<device-name>-<time>.json`: never over the committed results.

    from nima.bench import format_table, run_attention_bench
    print(format_table(run_attention_bench("cuda", "bfloat16", quick=True)))
"""

from __future__ import annotations

import argparse
import platform
import re
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from nima import atomic
from nima.capabilities import describe, interpreter_hint, lacks
from nima.errors import CapabilityError, ConfigError, UnknownPluginError
from nima.hooks import for_command, system
from nima.registry import Entry

AttnFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, bool], torch.Tensor]

BASELINES = ("sdpa_flash", "sdpa_cudnn", "flex_compiled")
"""torch's own attention paths, timed beside the plugins on CUDA (they are not plugins)."""


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


@dataclass(frozen=True)
class Impl:
    """A timed implementation: called as fn(q, k, v, causal). `entry` is its registry entry
    (None for a torch baseline), whose capabilities decide which rows it can run."""

    fn: AttnFn
    entry: Entry | None = None

    def __call__(self, q, k, v, causal: bool) -> torch.Tensor:
        return self.fn(q, k, v, causal)

    def missing(self, shape: BenchShape, backward: bool) -> list[str]:
        """What of this shape and pass the plugin does not declare (head dim, backward)."""
        if self.entry is None:
            return []
        return lacks(self.entry, {"head_dim": shape.head_dim, "backward": backward})


def default_dtype(device: str) -> str:
    return "bfloat16" if device == "cuda" else "float32"


def implementations(
    device: str, dtype: str | None = None, names: Sequence[str] | None = None
) -> dict[str, Impl | str]:
    """name -> the implementation, or a string saying why it is not timed on device and dtype.

    names: registered attention plugins and the CUDA baselines (BASELINES); default: every
    registered attention plugin, plus the baselines on CUDA. An unknown name is an
    UnknownPluginError with the closest names.
    """
    registry = system().registries["attention"]
    dtype = dtype or default_dtype(device)
    if not names:
        names = registry.names() + (list(BASELINES) if device == "cuda" else [])
    impls: dict[str, Impl | str] = {}
    for name in dict.fromkeys(names):
        if name in BASELINES:
            impls[name] = (
                Impl(_baseline(name))
                if device == "cuda"
                else f"a CUDA backend of torch, not {device}"
            )
            continue
        try:
            entry = registry.entry(name)
        except UnknownPluginError as exc:
            raise UnknownPluginError(
                f"{exc} The benchmark also times torch's baselines {', '.join(BASELINES)} (CUDA)."
            ) from None
        impls[name] = _plugin(entry, device, dtype)
    return impls


def _plugin(entry: Entry, device: str, dtype: str) -> Impl | str:
    """The plugin built with its defaults, or why it cannot be timed on device and dtype."""
    if interpreter_hint(entry, device):
        return f"runs on {device} only through an interpreter: a correctness tool, not timed"
    missing = lacks(entry, {"device": device, "dtype": dtype})
    if missing:
        return f"does not support {', '.join(missing)} (it supports {describe(entry.capabilities)})"
    try:
        attn = entry.obj()
    except Exception as exc:  # a plugin that needs arguments or cannot build here: say so
        return f"cannot be built with its defaults: {type(exc).__name__}: {exc}"
    return Impl(lambda q, k, v, causal: attn(q, k, v, causal=causal), entry)


def _baseline(name: str) -> AttnFn:
    if name == "flex_compiled":
        return _flex_attention()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    kind = {"sdpa_flash": SDPBackend.FLASH_ATTENTION, "sdpa_cudnn": SDPBackend.CUDNN_ATTENTION}[
        name
    ]

    def run(q, k, v, causal):
        with sdpa_kernel(kind):
            gqa = q.shape[1] != k.shape[1]
            return F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=gqa)

    return run


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


@dataclass
class BenchResult:
    """One benchmark run: a row per timed implementation x shape x pass, and the skipped ones."""

    device: str
    dtype: str
    rows: list[dict[str, Any]]
    skipped: dict[str, str] = field(default_factory=dict)  # implementation -> why not timed


def run_attention_bench(
    device: str | None = None,
    dtype: str | None = None,
    shapes: Sequence[BenchShape] | None = None,
    *,
    quick: bool = False,
    impls: Sequence[str] | None = None,
    min_time_s: float = 0.5,
) -> BenchResult:
    """Time the implementations (default: all; see `implementations`) on every shape, forward and
    forward+backward. Nothing is written (see `write_json`).

    device defaults to CUDA when present; dtype to bfloat16 on CUDA and float32 elsewhere. Rows
    that cannot run (out of memory, a backend missing, a head dim not declared) carry a `status`
    instead of a time. Nothing to time at all is a CapabilityError naming each reason.
    """
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = dtype or default_dtype(device)
    torch_dtype = getattr(torch, dtype)
    shapes = list(shapes) if shapes is not None else default_shapes(device, quick)
    found = implementations(device, dtype, impls)
    skipped = {name: why for name, why in found.items() if isinstance(why, str)}
    timed = {name: impl for name, impl in found.items() if isinstance(impl, Impl)}
    if not timed:
        reasons = "; ".join(f"{name} {why}" for name, why in skipped.items())
        raise CapabilityError(
            f"Nothing to time on {device} with {dtype}: {reasons}. Pick implementations that "
            f"declare {device} and {dtype} (`nima plugins --family attention --json` lists what "
            "each declares), or another --device/--dtype."
        )
    rows: list[dict[str, Any]] = []
    for shape in shapes:
        for backward in (False, True):
            group = [
                _row(name, impl, shape, device, torch_dtype, backward, min_time_s)
                for name, impl in timed.items()
            ]
            _add_speedups(group)
            rows += group
    return BenchResult(device, dtype, rows, skipped)


def _row(
    name: str,
    impl: Impl,
    shape: BenchShape,
    device: str,
    dtype: torch.dtype,
    backward: bool,
    min_time_s: float,
) -> dict[str, Any]:
    """One implementation on one shape and pass: its time, or a status saying why none."""
    row = {
        "shape": shape.label,
        **asdict(shape),
        "impl": name,
        "pass": "fwd+bwd" if backward else "fwd",
        "dtype": str(dtype).removeprefix("torch."),
        "ms": None,
        "tflops": None,
        "peak_mib": None,
        "status": "ok",
    }
    missing = impl.missing(shape, backward)
    if missing:
        row["status"] = f"skipped: does not support {', '.join(missing)}"
        return row
    try:
        ms, peak = _measure(impl, shape, device, dtype, backward, min_time_s)
        flops = shape.forward_flops() * (3.5 if backward else 1.0)
        row.update(ms=ms, tflops=flops / (ms * 1e-3) / 1e12, peak_mib=peak)
    except torch.OutOfMemoryError:
        row["status"] = "out of memory"
    except Exception as exc:  # a backend this GPU/torch lacks, a plugin that fails: say so, go on
        row["status"] = f"failed: {type(exc).__name__}: {str(exc)[:120]}"
    finally:
        if device == "cuda":
            torch.cuda.empty_cache()
    return row


def _add_speedups(group: list[dict[str, Any]]) -> None:
    """speedup = baseline time / row time, vs the reference and vs SDPA (flash on CUDA)."""
    times = {row["impl"]: row["ms"] for row in group}
    sdpa = "sdpa_flash" if times.get("sdpa_flash") else "sdpa"
    for row in group:
        for key, base in (("vs_reference", "reference"), ("vs_sdpa", sdpa)):
            ok = row["ms"] and times.get(base)
            row[key] = times[base] / row["ms"] if ok else None
        row["sdpa_baseline"] = sdpa


def default_out(device: str) -> Path:
    """A fresh `runs/bench-attention-<device-name>-<time>[-k].json` (runs/, like `nima run`)."""
    stem = f"bench-attention-{device_name(device)}-{time.strftime('%Y%m%d-%H%M%S')}"
    Path("runs").mkdir(exist_ok=True)
    for k in range(1, 1000):
        path = Path("runs") / (f"{stem}.json" if k == 1 else f"{stem}-{k}.json")
        try:
            path.open("x").close()  # claimed: a concurrent bench picks the next name
            return path
        except FileExistsError:
            continue
    raise ConfigError(f"runs/ already holds 999 files named {stem}*.json; pass --out FILE.json.")


def write_json(result: BenchResult, path: str | Path) -> Path:
    """Write the result (meta, rows, skipped) as strict JSON to `path`, atomically."""
    raw_name = torch.cuda.get_device_name() if result.device == "cuda" else None
    meta = {
        "device": result.device,
        "device_name": raw_name or device_name(result.device),
        "dtype": result.dtype,
        "torch": torch.__version__,
        "triton": _version("triton"),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "flops": "fwd 4*B*H*N*N*D (halved when causal); fwd+bwd 3.5x fwd",
    }
    atomic.write_json(path, {"meta": meta, "rows": result.rows, "skipped": result.skipped})
    return Path(path)


def _version(package: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def format_table(result: BenchResult) -> str:
    """A plain-text table, one block per shape and pass, implementations side by side; then one
    line per implementation that was not timed, and why."""

    def num(value: float | None, width: int, digits: int) -> str:
        return f"{'n/a':>{width}}" if value is None else f"{value:{width}.{digits}f}"

    header = (
        f"{'shape':<28} {'pass':<8} {'impl':<14} {'ms':>9} {'TFLOP/s':>8} "
        f"{'x ref':>7} {'x sdpa':>7} {'peak MiB':>9}  note"
    )
    lines = [header, "-" * len(header)]
    last = None
    for row in result.rows:
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
    if result.skipped:
        lines.append("")
    for name, why in result.skipped.items():
        lines.append(f"skipped {name}: {why}")
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
        "--out", type=Path, metavar="FILE.json",
        help="where the JSON goes (replaced if it exists); "
        "default: a new runs/bench-attention-<device-name>-<time>.json",
    )  # fmt: skip
    parser.add_argument(
        "--impl", action="append", metavar="NAME",
        help="an attention plugin (any registered one) or a CUDA baseline "
        f"({', '.join(BASELINES)}); repeatable; default: all of them",
    )  # fmt: skip


def main_bench(args: argparse.Namespace) -> int:
    """Run the attention benchmark from parsed arguments; print the table and the JSON path."""
    if args.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: CUDA is not available here; use --device cpu.")
    if args.out is not None and args.out.is_dir():
        raise ConfigError(
            f"--out {args.out} is a folder; name the JSON file, e.g. {args.out / 'attention.json'}."
        )
    for_command(args.disable_plugins)
    result = run_attention_bench(args.device, args.dtype, quick=args.quick, impls=args.impl)
    print(format_table(result))
    path = write_json(result, args.out or default_out(result.device))
    print(f"\nwrote {path}")
    return 0
