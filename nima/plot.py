"""`nima plot RUN_DIR...`: train and validation loss against step, several runs on one figure."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from nima.errors import RunDirError
from nima.runs.records import read_run

Points = tuple[list[int], list[float]]


@dataclass(frozen=True)
class Curves:
    """One run's (steps, losses) for the train and validation loss; either may be empty."""

    name: str
    train: Points
    val: Points


def read_curves(run_dir: Path) -> Curves | str:
    """The run's loss curves, or why it has none (no metrics.jsonl, or no loss logged)."""
    if not run_dir.is_dir():
        return f"{run_dir} (no such folder)"
    if not (run_dir / "metrics.jsonl").is_file():
        return f"{run_dir} (no metrics.jsonl)"
    record = read_run(run_dir)

    def points(key: str) -> Points:
        curve = record.curve(key)
        return list(curve), list(curve.values())

    curves = Curves(run_dir.name, points("train_loss"), points("val_loss"))
    if not curves.train[0] and not curves.val[0]:
        return f"{run_dir} (metrics.jsonl has no train_loss or val_loss)"
    return curves


def plot_runs(run_dirs: Sequence[Path], out: Path) -> Path:
    """Write a PNG of each run's train loss (thin) and val loss (markers) to `out`.

    Every run must have logged a loss; otherwise nothing is written and the runs without one
    are named.
    """
    found = [read_curves(Path(d)) for d in run_dirs]
    empty = [f for f in found if isinstance(f, str)]
    runs = [f for f in found if isinstance(f, Curves)]
    if empty:
        raise RunDirError(
            f"Nothing to plot for {'; '.join(empty)}. `nima plot` takes run directories written "
            "by `nima run` that have logged at least one step (metrics.jsonl with train_loss or "
            "val_loss, written every train.log_interval steps); no figure was written."
        )
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for curves in runs:
        line = ax.plot(*curves.train, lw=0.8, alpha=0.6, label=f"{curves.name} train")[0]
        if curves.val[0]:
            ax.plot(*curves.val, "o-", color=line.get_color(), label=f"{curves.name} val")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/token)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
