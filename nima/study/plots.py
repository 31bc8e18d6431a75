"""A study's figures (matplotlib): validation loss curves per variant with a band over seeds,
and the final metric per variant with its 95% CI."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from nima import atomic

if TYPE_CHECKING:
    from nima.study.report import StudyResults


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    return plt


def curves(results: StudyResults, out: Path) -> None:
    """Mean val loss over seeds per variant; the band spans the seeds' lowest to highest."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 5))
    for v in results.variants:
        per_seed = [run.curve("val_loss") for run in v.runs.values()]
        if not per_seed:
            continue
        steps = sorted(set.intersection(*(set(c) for c in per_seed)))
        if not steps:
            continue
        values = np.array([[c[s] for s in steps] for c in per_seed])
        line = ax.plot(steps, values.mean(axis=0), label=f"{v.name} (n={len(per_seed)})")[0]
        ax.fill_between(
            steps, values.min(axis=0), values.max(axis=0), alpha=0.2, color=line.get_color()
        )
    ax.set_xlabel("step")
    ax.set_ylabel("val loss on the fixed eval batches (nats/token)")
    ax.set_title("mean over seeds; band: lowest to highest seed")
    ax.grid(alpha=0.3)
    ax.legend()
    _save(fig, out, plt)


def metric(results: StudyResults, out: Path) -> None:
    """Each seed's value (dots), the mean (bar end) and its 95% CI (whiskers), per variant."""
    plt = _pyplot()
    plan = results.plan
    fig, ax = plt.subplots(figsize=(max(5, 1.3 * len(results.variants) + 2), 4.5))
    for x, v in enumerate(results.variants):
        e = v.estimate
        if not e.n:
            continue
        color = "tab:orange" if v.name == results.best else "tab:blue"
        seeds = list(v.values.values())
        ax.scatter([x] * len(seeds), seeds, s=14, color="0.4", zorder=3)
        if e.n > 1:
            ax.errorbar(x, e.mean, yerr=[[e.mean - e.ci_low], [e.ci_high - e.mean]], fmt="o",
                        color=color, capsize=6, markersize=8, zorder=2)  # fmt: skip
        else:
            ax.plot(x, e.mean, "o", color=color, markersize=8)
    labels = [
        v.name + (" (baseline)" if v.name == plan["baseline"] else "") + (" ★" if v.name == results.best else "")
        for v in results.variants
    ]  # fmt: skip
    ax.set_xticks(range(len(labels)), labels, rotation=20, ha="right")
    direction = "lower" if plan["lower_is_better"] else "higher"
    ax.set_ylabel(f"{plan['metric']} ({direction} is better)")
    ax.set_title("mean and 95% CI over seeds; dots: single seeds")
    ax.grid(alpha=0.3, axis="y")
    _save(fig, out, plt)


def _save(fig, out: Path, plt) -> None:
    fig.tight_layout()
    with atomic.atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
