"""A study's results from its run directories: results.csv, results.md, curves.png, metric.png.

`nima ablate` writes them when its runs end; `nima study report STUDY_DIR` writes them again
from what is on disk (after more seeds finished, or to re-render).
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nima import atomic
from nima.errors import RunDirError
from nima.runs.records import RunRecord, read_run
from nima.study import plots
from nima.study.stats import Comparison, Estimate, compare, estimate

PLAN = "study.json"


@dataclass(frozen=True)
class VariantResult:
    """One variant's finished runs, its statistics, and why any seed is missing."""

    name: str
    bindings: list[str]
    runs: dict[int, RunRecord]  # finished runs by seed
    values: dict[int, float]  # the metric by seed
    estimate: Estimate
    comparison: Comparison | None  # None for the baseline, or with fewer than 2 values a side
    missing: dict[int, str]  # seed -> why it has no result
    tokens_per_s: float
    parameters: int | None
    wall_s: float


@dataclass(frozen=True)
class StudyResults:
    study_dir: Path
    plan: dict[str, Any]
    variants: list[VariantResult]

    @property
    def best(self) -> str | None:
        scored = [v for v in self.variants if v.estimate.n]
        if not scored:
            return None
        sign = 1 if self.plan["lower_is_better"] else -1
        return min(scored, key=lambda v: sign * v.estimate.mean).name


def run_dir(study_dir: Path, variant: str, seed: int) -> Path:
    return study_dir / "runs" / variant / f"seed{seed}"


def log_path(study_dir: Path, variant: str, seed: int) -> Path:
    return study_dir / "logs" / variant / f"seed{seed}.log"


def read_plan(study_dir: Path) -> dict[str, Any]:
    path = study_dir / PLAN
    if not path.is_file():
        what = "does not exist" if not study_dir.exists() else f"has no {PLAN}"
        raise RunDirError(
            f"Study directory {study_dir} {what}; give the folder `nima ablate` wrote (by "
            f"default runs/study-<study file name>), which holds {PLAN}, study.gin and runs/."
        )
    return json.loads(path.read_text())


def collect(study_dir: Path) -> StudyResults:
    """Every variant's results as the run directories hold them now."""
    plan = read_plan(study_dir)
    metric, seeds = plan["metric"], plan["seeds"]
    found: dict[str, tuple[dict[int, RunRecord], dict[int, str]]] = {}
    for variant in plan["variants"]:
        runs, missing = {}, {}
        for seed in seeds:
            record = read_run(run_dir(study_dir, variant["name"], seed))
            if record.finished and metric in record.summary:
                runs[seed] = record
            else:
                missing[seed] = _why_missing(study_dir, variant["name"], seed, record, metric)
        found[variant["name"]] = runs, missing
    base_values = _values(found[plan["baseline"]][0], metric)
    variants = []
    for variant in plan["variants"]:
        name = variant["name"]
        runs, missing = found[name]
        values = _values(runs, metric)
        variants.append(
            VariantResult(
                name=name,
                bindings=variant["bindings"],
                runs=runs,
                values=values,
                estimate=estimate(list(values.values())),
                comparison=None if name == plan["baseline"] else compare(values, base_values),
                missing=missing,
                tokens_per_s=_mean([r.summary["tokens_per_s"] for r in runs.values()]),
                parameters=next((r.info.get("parameters") for r in runs.values()), None),
                wall_s=_mean([r.summary["wall_s"] for r in runs.values()]),
            )
        )
    return StudyResults(study_dir, plan, variants)


def _values(runs: dict[int, RunRecord], metric: str) -> dict[int, float]:
    return {seed: float(record.summary[metric]) for seed, record in runs.items()}


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def _why_missing(study_dir: Path, variant: str, seed: int, record: RunRecord, metric: str) -> str:
    if record.finished:
        return f"its summary.json has no {metric}"
    log = log_path(study_dir, variant, seed)
    if not log.is_file():
        return "not run yet"
    lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith(("error:", "[launcher]"))]
    last = (errors or lines or ["(empty log)"])[-1]
    state = "unfinished" if record.run_dir.is_dir() else "failed before training"
    return f"{state}; {log.relative_to(study_dir)}: {last}"


def write_report(study_dir: str | Path) -> StudyResults:
    """Write results.csv, results.md and the plots into the study directory."""
    results = collect(Path(study_dir))
    atomic.write_text(results.study_dir / "results.csv", results_csv(results))
    plots.curves(results, results.study_dir / "curves.png")
    plots.metric(results, results.study_dir / "metric.png")
    atomic.write_text(results.study_dir / "results.md", results_markdown(results))
    return results


CSV_COLUMNS = (
    "variant", "baseline", "best", "n", "mean", "std", "ci95_low", "ci95_high", "diff_vs_baseline",
    "test", "t", "df", "p_value", "hedges_g", "tokens_per_s", "parameters", "wall_s", "bindings",
)  # fmt: skip


def results_csv(results: StudyResults) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    for v in results.variants:
        c, e = v.comparison, v.estimate
        writer.writerow(
            [
                v.name, v.name == results.plan["baseline"], v.name == results.best, e.n, e.mean,
                e.std, e.ci_low, e.ci_high, c.diff if c else "", c.test if c else "",
                c.t if c else "", c.df if c else "", c.p if c else "", c.hedges_g if c else "",
                v.tokens_per_s, v.parameters if v.parameters is not None else "", v.wall_s,
                "; ".join(v.bindings),
            ]
        )  # fmt: skip
    return out.getvalue()


def results_markdown(results: StudyResults) -> str:
    plan = results.plan
    direction = "lower" if plan["lower_is_better"] else "higher"
    bound = [b for v in plan["variants"] for b in v["bindings"]]
    steps_varies = any(b.replace(" ", "").startswith("train.steps=") for b in bound)
    steps = "train.steps as each variant sets it" if steps_varies else f"{plan['steps']} steps each"
    lines = [
        f"# Study: {Path(plan['study_file']).stem}",
        "",
        f"`{plan['study_file']}`: {len(plan['variants'])} variants x {len(plan['seeds'])} seeds "
        f"({', '.join(map(str, plan['seeds']))}), {steps}. Metric "
        f"`{plan['metric']}` ({direction} is better); baseline `{plan['baseline']}`; "
        f"★ marks the best mean.",
        "",
        "| variant | n | mean | std | 95% CI | vs baseline | p | test | Hedges' g | tokens/s "
        "| parameters | train wall s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for v in results.variants:
        e, c = v.estimate, v.comparison
        name = f"`{v.name}`" + (" (baseline)" if v.name == plan["baseline"] else "")
        name += " ★" if v.name == results.best else ""
        ci = f"[{_f(e.ci_low)}, {_f(e.ci_high)}]" if e.n > 1 else "n/a"
        lines.append(
            f"| {name} | {e.n} | {_f(e.mean)} | {_f(e.std)} | {ci} | "
            f"{_f(c.diff, '+.3g') if c else ''} | {_f(c.p, '.3g') if c else ''} | "
            f"{c.test if c else ''} | {_f(c.hedges_g, '+.2f') if c else ''} | "
            f"{_f(v.tokens_per_s, ',.0f')} | "
            f"{f'{v.parameters:,}' if v.parameters is not None else 'n/a'} | {_f(v.wall_s, '.1f')} |"
        )
    lines += [
        "",
        "Mean and std (n - 1) over seeds; 95% CI of the mean from Student's t. vs baseline: "
        "difference of means (variant - baseline), two-sided t-test: paired by seed when both "
        "ran the same seeds, else Welch. Hedges' g: that difference over the pooled std, "
        "small-sample corrected. tokens/s and train wall time (the training loop) are means "
        "over seeds.",
        "",
        "| variant | bindings |",
        "| --- | --- |",
        *(
            f"| `{v.name}` | {'<br>'.join(f'`{b}`' for b in v.bindings)} |"
            for v in results.variants
        ),
    ]
    missing = [(v.name, s, why) for v in results.variants for s, why in v.missing.items()]
    if missing:
        lines += ["", "## Runs without a result", ""]
        lines += [f"- `{name}` seed {seed}: {why}" for name, seed, why in missing]
    lines += ["", "![validation loss curves](curves.png)", "", "![final metric](metric.png)", ""]
    return "\n".join(lines)


def _f(value: float, spec: str = ".4f") -> str:
    return "n/a" if value is None or math.isnan(value) else format(value, spec)
