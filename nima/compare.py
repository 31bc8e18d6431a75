"""`nima compare RUN_A RUN_B`: two runs' losses step by step, where they part and by how much.

For each logged loss (train_loss, val_loss): the first step where the two runs differ at all,
the largest difference, and a per-step table (CSV) and plot. When a study measured the
seed-to-seed noise (its variants ran several seeds; given with --study, or found because RUN_A
lies in a study directory), each difference is set against it: two runs that differ only in
their seed differ by more than 1.96 * sqrt(2) * sigma about 5% of the time, where sigma is the
seed-to-seed standard deviation at that step, pooled over the study's variants. On CPU with the
same seed, `attention.reference` against `attention.sdpa` shows when and how far they drift.
"""

from __future__ import annotations

import argparse
import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from nima import atomic
from nima.errors import RunDirError
from nima.runs.records import RunRecord, require_run
from nima.validation import Range, cli_type

KEYS = ("train_loss", "val_loss")
NOISE_Z = 1.96 * math.sqrt(2)  # a difference of two seeds' values: sqrt(2) sigma, 95% two-sided


@dataclass(frozen=True)
class Drift:
    """How one loss of RUN_B departs from RUN_A's."""

    key: str
    steps: list[int]  # steps both runs logged
    a: list[float]
    b: list[float]
    noise: dict[int, float]  # step -> seed-to-seed sigma, where a study measured it

    @property
    def diffs(self) -> list[float]:
        return [y - x for x, y in zip(self.a, self.b, strict=True)]

    @property
    def first_difference(self) -> int | None:
        return next((s for s, d in zip(self.steps, self.diffs, strict=True) if d != 0), None)

    @property
    def largest(self) -> tuple[int, float] | None:
        """(step, difference) of the largest |difference|."""
        if not self.steps:
            return None
        i = max(range(len(self.steps)), key=lambda i: abs(self.diffs[i]))
        return self.steps[i], self.diffs[i]

    def outside_noise(self) -> list[int]:
        """Steps where |difference| exceeds the band two seeds' values stay within 95% of the time."""
        return [
            s
            for s, d in zip(self.steps, self.diffs, strict=True)
            if s in self.noise and abs(d) > NOISE_Z * self.noise[s]
        ]


def compare_runs(run_a: Path, run_b: Path, study_dir: Path | None = None) -> list[Drift]:
    """Each loss both runs logged, step by step, with the study's noise where there is one."""
    a, b = require_run(run_a), require_run(run_b)
    noise = seed_noise(study_dir) if study_dir else {}
    drifts = []
    for key in KEYS:
        curve_a, curve_b = a.curve(key), b.curve(key)
        steps = sorted(set(curve_a) & set(curve_b))
        if steps:
            a_values, b_values = [curve_a[s] for s in steps], [curve_b[s] for s in steps]
            drifts.append(Drift(key, steps, a_values, b_values, noise.get(key, {})))
    if not drifts:
        raise RunDirError(
            f"{run_a} and {run_b} logged no loss at a common step; compare runs of one "
            f"experiment (the same train.log_interval and eval_interval)."
        )
    return drifts


def find_study(run_dir: Path) -> Path | None:
    """The study directory a run lies in (STUDY_DIR/runs/VARIANT/seedN), if any."""
    candidate = run_dir.resolve().parent.parent.parent
    return candidate if (candidate / "study.json").is_file() else None


def seed_noise(study_dir: Path) -> dict[str, dict[int, float]]:
    """Per loss and step, the seed-to-seed sigma: within-variant variances pooled over the
    variants that finished two or more seeds."""
    from nima.study.report import collect

    results = collect(study_dir)
    noise: dict[str, dict[int, float]] = {}
    for key in KEYS:
        sums: dict[int, list[float]] = {}  # step -> [sum of squared deviations, degrees of freedom]
        for variant in results.variants:
            for step, values in _by_step(list(variant.runs.values()), key).items():
                if len(values) > 1:
                    mean = sum(values) / len(values)
                    acc = sums.setdefault(step, [0.0, 0])
                    acc[0] += sum((v - mean) ** 2 for v in values)
                    acc[1] += len(values) - 1
        noise[key] = {step: math.sqrt(ss / df) for step, (ss, df) in sums.items()}
    return noise


def _by_step(runs: list[RunRecord], key: str) -> dict[int, list[float]]:
    values: dict[int, list[float]] = {}
    for run in runs:
        for step, value in run.curve(key).items():
            values.setdefault(step, []).append(value)
    return values


def describe(drift: Drift, name_a: str, name_b: str) -> list[str]:
    """The findings about one loss, as sentences."""
    first, (step, diff) = drift.first_difference, drift.largest
    lines = [f"{drift.key}: {len(drift.steps)} common steps ({name_b} - {name_a})"]
    if first is None:
        lines.append("  identical at every step")
        return lines
    i = drift.steps.index(first)
    lines.append(
        f"  first differs at step {first}: {drift.a[i]:.9g} vs {drift.b[i]:.9g} "
        f"(difference {drift.diffs[i]:+.3g})"
    )
    lines.append(f"  largest difference {diff:+.4g} at step {step}")
    if drift.noise:
        outside = drift.outside_noise()
        measured = sum(s in drift.noise for s in drift.steps)
        band = f"+-{NOISE_Z:.2f} x seed-to-seed sigma, measured at {measured} of these steps"
        if outside:
            lines.append(
                f"  outside the seed noise ({band}) at {len(outside)} steps, first {outside[0]}"
            )
        else:
            lines.append(f"  inside the seed noise ({band}) at every step measured")
    return lines


def table_csv(drifts: list[Drift]) -> str:
    """One row per step: each loss of A and B, their difference, and the noise band."""
    steps = sorted({s for d in drifts for s in d.steps})
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(
        ["step"] + [f"{d.key}_{c}" for d in drifts for c in ("a", "b", "diff", "noise_band")]
    )
    index = [{s: i for i, s in enumerate(d.steps)} for d in drifts]
    for step in steps:
        row: list[Any] = [step]
        for d, at in zip(drifts, index, strict=True):
            if step in at:
                i = at[step]
                band = NOISE_Z * d.noise[step] if step in d.noise else ""
                row += [d.a[i], d.b[i], d.diffs[i], band]
            else:
                row += ["", "", "", ""]
        writer.writerow(row)
    return out.getvalue()


def plot(drifts: list[Drift], name_a: str, name_b: str, out: Path) -> None:
    """Top: both runs' losses. Bottom: B - A per step, with the seed-noise band when known."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 7), sharex=True)
    for d, color in zip(drifts, ("tab:blue", "tab:orange"), strict=False):
        marker = None if d.key == "train_loss" else "o"
        top.plot(d.steps, d.a, marker=marker, color=color, lw=1, label=f"{name_a} {d.key}")
        top.plot(d.steps, d.b, marker=marker, color=color, lw=1, ls="--", label=f"{name_b} {d.key}")
        bottom.plot(d.steps, d.diffs, marker=marker, color=color, lw=1, label=f"{d.key} difference")
        if d.noise:
            steps = [s for s in d.steps if s in d.noise]
            band = [NOISE_Z * d.noise[s] for s in steps]
            bottom.fill_between(steps, [-b for b in band], band, color=color, alpha=0.15,
                                label=f"{d.key} seed noise (95%)")  # fmt: skip
    top.set_ylabel("loss (nats/token)")
    top.legend()
    top.grid(alpha=0.3)
    bottom.axhline(0, color="0.5", lw=0.8)
    bottom.set_xlabel("step")
    bottom.set_ylabel(f"{name_b} - {name_a}")
    bottom.legend()
    bottom.grid(alpha=0.3)
    fig.tight_layout()
    with atomic.atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)


def add_compare_arguments(subparsers: Any, parents: list[argparse.ArgumentParser] = ()) -> None:
    """Add `compare` to the `nima` subparsers."""
    compare = subparsers.add_parser(
        "compare", parents=list(parents), help="two runs' losses step by step, and where they part"
    )
    compare.add_argument("run_a", type=Path)
    compare.add_argument("run_b", type=Path)
    compare.add_argument("--study", type=Path, help="the study whose seed noise to compare with "
                         "(default: the study RUN_A lies in, if any)")  # fmt: skip
    compare.add_argument("--out", type=Path, help="PNG to write, the CSV beside it "
                         "(default: RUN_A/compare-<RUN_B>.png)")  # fmt: skip
    compare.add_argument(
        "--rows", type=cli_type(Annotated[int, Range(ge=1)]), default=12,
        help="table rows to print (default 12)",
    )
    compare.set_defaults(func=main_compare)


def main_compare(args: argparse.Namespace) -> int:
    study = args.study or find_study(args.run_a)
    drifts = compare_runs(args.run_a, args.run_b, study)
    name_a, name_b = _name(args.run_a), _name(args.run_b)
    out = args.out or args.run_a / f"compare-{name_b.replace('/', '-')}.png"
    print(
        f"A = {args.run_a}\nB = {args.run_b}"
        + (f"\nseed noise from the study {study}" if study else "")
    )
    for drift in drifts:
        print("\n".join(describe(drift, "A", "B")))
    print(_table(drifts, args.rows))
    plot(drifts, name_a, name_b, out)
    atomic.write_text(out.with_suffix(".csv"), table_csv(drifts))
    print(f"wrote {out} and {out.with_suffix('.csv')} (every step)")
    return 0


def _name(run_dir: Path) -> str:
    """A short name: the folder, with its parent for a study run (rope/seed1)."""
    return "/".join(run_dir.resolve().parts[-2:]) if find_study(run_dir) else run_dir.name


def _table(drifts: list[Drift], rows: int) -> str:
    """A few rows, evenly spaced, always with the first differing and the largest steps."""
    steps = sorted({s for d in drifts for s in d.steps})
    n = min(rows, len(steps))
    keep = {steps[round(i * (len(steps) - 1) / max(n - 1, 1))] for i in range(n)}
    for d in drifts:
        keep |= {s for s in (d.first_difference, (d.largest or (None,))[0]) if s is not None}
    header = "step".rjust(6) + "".join(
        f"{d.key + ' A':>14}{d.key + ' B':>14}{'B - A':>12}" for d in drifts
    )
    lines = [header]
    for step in sorted(keep):
        line = f"{step:>6}"
        for d in drifts:
            if step in d.steps:
                i = d.steps.index(step)
                line += f"{d.a[i]:>14.6f}{d.b[i]:>14.6f}{d.diffs[i]:>+12.3g}"
            else:
                line += " " * 40
        lines.append(line)
    return "\n".join(lines)
