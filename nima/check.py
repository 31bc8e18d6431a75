"""`nima check`: the conformance kit outside pytest, as a compatibility matrix.

    nima check                          every registered plugin
    nima check nima-example             one package's plugins (or "nima" for the built-ins)
    nima check attention.triton mlp     one plugin, one family
    nima check --device cuda --bench    on the GPU, with a side-by-side timing

Each plugin x capability is verified, declared but failing, not declared, or skipped (the
check cannot run here: no such device, the dataset needs a path). On CPU the Triton kernels run
through Triton's interpreter (TRITON_INTERPRET=1 is set for this command unless already set).
A failing capability is not trusted afterwards: the verdicts are written to
$NIMA_CACHE_DIR/check/verdicts.json, and `nima run` and every command that loads a run refuse
what failed (nima.capabilities).
Exit status 1 when anything declared fails.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

SYMBOLS = {"verified": "✓", "failing": "✗", "not declared": "·", "skipped": "–"}


def add_check_arguments(subparsers: Any, parents: Sequence[argparse.ArgumentParser] = ()) -> None:
    """Add `check` to the `nima` subparsers."""
    check = subparsers.add_parser(
        "check", parents=list(parents),
        help="verify plugins against their contracts: a plugin x capability matrix",
    )  # fmt: skip
    check.add_argument(
        "selection", nargs="*", metavar="PACKAGE|FAMILY|family.name",
        help="what to check (default: every registered plugin)",
    )  # fmt: skip
    check.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    check.add_argument(
        "--bench", action="store_true",
        help="also time each attention/norm/mlp plugin against its family's reference",
    )  # fmt: skip
    check.add_argument("--json", action="store_true", help="results as JSON on stdout")
    check.set_defaults(func=main_check)


def main_check(args: argparse.Namespace) -> int:
    if args.device == "cpu":  # Triton kernels on CPU tensors; read when triton is first imported
        os.environ.setdefault("TRITON_INTERPRET", "1")
    from nima.errors import NimaError
    from nima.hooks import for_command
    from nima.testing.kit import FAILING, collect, run_check, select

    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise NimaError("nima check --device cuda: no CUDA device on this machine.")
    system = for_command(args.disable_plugins)
    entries = select(system.registries.entries(), args.selection)
    results = []
    for entry in entries:
        start = time.perf_counter()
        mine = [run_check(c) for c in collect([entry], device=args.device)]
        results += mine
        if mine and not args.json:
            bad = sum(r.status == FAILING for r in mine)
            print(
                f"checked {entry.family}.{entry.name}: {len(mine)} checks, "
                f"{time.perf_counter() - start:.1f} s" + (f", {bad} failing" if bad else ""),
                file=sys.stderr,
            )
    record(results, args.device)
    if not args.json:
        print_matrix(results)  # first: a timing that cannot run loses nothing
    timings = bench(entries, args.device) if args.bench else []
    if args.json:
        print(json.dumps({"results": [as_dict(r) for r in results], "bench": timings}, indent=2))
    elif timings:
        print_bench(timings)
    return 1 if any(r.status == FAILING for r in results) else 0


def as_dict(result: Any) -> dict[str, Any]:
    c = result.check
    return {
        "plugin": f"{c.family}.{c.plugin}", "package": c.package, "capability": c.capability,
        "property": c.what, "status": result.status, "message": result.message,
        "seconds": round(result.seconds, 4),
    }  # fmt: skip


def record(results: Sequence[Any], device: str) -> None:
    """Keep the failing capabilities of every plugin just checked (a passing plugin's record is
    cleared), for `nima run` to refuse them (nima.capabilities.require)."""
    from nima import atomic
    from nima.capabilities import verdict_key, verdicts_path
    from nima.registry import Entry

    path = verdicts_path()
    try:
        verdicts = json.loads(path.read_text())
    except (OSError, ValueError):
        verdicts = {}
    by_plugin: dict[str, dict[str, str]] = {}
    for r in results:
        c = r.check
        key = verdict_key(Entry(c.family, c.plugin, None, "", c.package), device)
        failing = by_plugin.setdefault(key, {})
        if r.status == "failing":
            failing[c.capability] = r.message
    for key, failing in by_plugin.items():
        if failing:
            verdicts[key] = failing
        else:
            verdicts.pop(key, None)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_json(path, verdicts)


def print_matrix(results: Sequence[Any]) -> None:
    """One table per family: a row per plugin, a column per capability."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    families: dict[str, dict[str, dict[str, Any]]] = {}
    for r in results:
        c = r.check
        label = c.plugin if c.package in ("nima", "") else f"{c.plugin} ({c.package})"
        families.setdefault(c.family, {}).setdefault(label, {})[c.capability] = r
    for family, plugins in families.items():
        capabilities = list(dict.fromkeys(cap for row in plugins.values() for cap in row))

        def cell(plugin: str, capability: str, plugins: dict = plugins) -> str:
            found = plugins[plugin].get(capability)
            return SYMBOLS[found.status] if found else ""

        # the longer list runs down the page, so a family's table fits a terminal
        across = list(plugins) if len(capabilities) > len(plugins) else capabilities
        down = capabilities if across is not capabilities else list(plugins)
        corner = "capability" if across is not capabilities else "plugin"
        table = Table(corner, *across, title=family, title_justify="left")
        for row in down:
            pairs = ((col, row) if corner == "capability" else (row, col) for col in across)
            table.add_row(row, *(cell(p, c) for p, c in pairs))
        console.print(table)
    console.print("✓ verified   ✗ declared but failing   · not declared   – skipped here")
    for r in results:
        if r.status == "failing":
            console.print(f"[red]✗[/red] {r.message}", highlight=False)
    skipped = {}
    for r in results:
        if r.status == "skipped":
            skipped.setdefault(f"{r.check.family}.{r.check.plugin}", r.message)
    for plugin, why in skipped.items():
        console.print(f"– {plugin}: {why}", highlight=False)


# --- --bench: each plugin against its family's reference, interleaved rounds ------------------


def bench(entries: Sequence[Any], device: str, rounds: int = 5) -> list[dict[str, Any]]:
    """Median time of a forward (+ backward) pass of each attention, norm and mlp plugin next to
    its family's reference on the same inputs in a dtype the plugin declares, timed in
    alternating rounds in this process. A plugin that cannot be timed here gets a row saying why
    ("skipped"), never a traceback."""
    from nima.capabilities import lacks

    timings = []
    for entry in entries:
        if entry.family not in ("attention", "norm", "mlp"):
            continue
        name = f"{entry.family}.{entry.name}"
        if lacks(entry, {"device": device}):
            timings.append({"plugin": name, "skipped": f"device {device} not declared"})
        elif device in (entry.capabilities.get("interpreter") or {}) and device == "cpu":
            why = "reached through an interpreter here: correct, but too slow to time"
            timings.append({"plugin": name, "skipped": why})
        else:
            try:
                timings.append(_time(entry, device, rounds))
            except NotTimed as why:
                timings.append({"plugin": name, "skipped": str(why)})
            except Exception as exc:  # a plugin that cannot run this shape or dtype here
                detail = " ".join(str(exc).split())[:200]
                timings.append(
                    {"plugin": name, "skipped": f"raised {type(exc).__name__}: {detail}"}
                )
    return timings


class NotTimed(Exception):
    """The plugin cannot be timed here (the message says why)."""


def _time(entry: Any, device: str, rounds: int) -> dict[str, Any]:
    import torch

    from nima.testing.kit import Skip

    dtype = bench_dtype(entry, device)
    try:
        made = _bench_pair(entry, device, getattr(torch, dtype))
    except Skip as why:  # it cannot be built here
        raise NotTimed(str(why)) from None
    if made is None:
        raise NotTimed("no `formula` to time against")
    plugin, reference, what, shape = made
    times: dict[str, list[float]] = {"plugin": [], "reference": []}
    for fn in (plugin, reference):  # warm-up (and Triton's compile)
        fn()
    for _ in range(rounds):
        for name, fn in (("plugin", plugin), ("reference", reference)):
            if device == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            fn()
            if device == "cuda":
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - start)
    p, r = (sorted(t)[len(t) // 2] * 1e3 for t in (times["plugin"], times["reference"]))
    return {
        "plugin": f"{entry.family}.{entry.name}", "against": what, "shape": shape,
        "dtype": dtype, "plugin_ms": round(p, 3), "reference_ms": round(r, 3),
        "speedup": round(r / p, 3),
    }  # fmt: skip


def bench_dtype(entry: Any, device: str) -> str:
    """The dtype to time in: float32 on CPU and bfloat16 on CUDA where declared, else the first
    dtype the plugin declares there."""
    from nima.testing.kit import dtypes_on

    preferred = "float32" if device == "cpu" else "bfloat16"
    declared = dtypes_on(entry, device, [preferred])
    if not declared:
        raise NotTimed(f"it declares no dtype on {device}")
    return preferred if preferred in declared else declared[0]


_SHAPE = {"cpu": (2, 4, 256, 64), "cuda": (4, 16, 2048, 64)}  # (B, H, N, D)


def _bench_pair(entry: Any, device: str, dtype: Any):
    """(plugin step, reference step, reference name, input shape); steps take no argument."""
    import torch

    import nima
    from nima.testing.attention import to_device
    from nima.testing.kit import maker

    B, H, N, D = _SHAPE[device]  # a norm or mlp: x (B, N, H * D)
    head_dims = entry.capabilities.get("head_dims")
    if entry.family == "attention" and head_dims is not None and D not in head_dims:
        D = min(head_dims, key=lambda d: (abs(d - D), d))
    backward = bool(entry.capabilities.get("backward"))
    if entry.family == "attention":
        q, k, v = (
            torch.randn(B, H, N, D, device=device, dtype=dtype, requires_grad=backward)
            for _ in range(3)
        )
        plugin = to_device(maker(entry)(), device)
        reference = nima.get("attention", "reference")()

        def step(attn):
            def run():
                out = attn(q, k, v, causal=True)
                if backward:
                    out.sum().backward()

            return run

        return step(plugin), step(reference), "attention.reference", (B, H, N, D)
    from nima.testing.layers import REFERENCES, build_layer

    D = H * D
    formula = entry.capabilities.get("formula")
    if formula is None:
        return None
    layer = build_layer(entry.family, maker(entry), d_model=D).to(device=device, dtype=dtype)
    reference = REFERENCES[formula](getattr(layer, "eps", 1e-5))
    params = dict(layer.named_parameters())
    x = torch.randn(B, N, D, device=device, dtype=dtype, requires_grad=backward)

    def run_plugin():
        out = layer(x)
        if backward:
            out.sum().backward()

    def run_reference():
        out = reference(x, params)
        if backward:
            out.sum().backward()

    return run_plugin, run_reference, f"the {formula} formula in plain torch", (B, N, D)


def print_bench(timings: Sequence[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="--bench (median of interleaved rounds, forward + backward where declared)")
    for column in ("plugin", "against", "dtype", "plugin ms", "reference ms", "speedup"):
        table.add_column(column)
    for t in timings:
        if "skipped" not in t:
            table.add_row(t["plugin"], t["against"], t["dtype"], f"{t['plugin_ms']:.3f}",
                          f"{t['reference_ms']:.3f}", f"{t['speedup']:.2f}x")  # fmt: skip
    console = Console()
    console.print(table)
    for t in timings:
        if "skipped" in t:
            console.print(f"– {t['plugin']} not timed: {t['skipped']}", highlight=False)
