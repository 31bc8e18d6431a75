"""`nima plot RUN_DIR...`: train and validation loss against step, several runs on one figure."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from nima.errors import RunDirError
from nima.train.metrics import read_metrics


def plot_runs(run_dirs: Sequence[Path], out: Path) -> Path:
    """Write a PNG of each run's train loss (thin) and val loss (markers) to `out`."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for run_dir in map(Path, run_dirs):
        metrics = run_dir / "metrics.jsonl"
        if not metrics.is_file():
            raise RunDirError(f"{run_dir} has no metrics.jsonl: is it a NIMA run directory?")
        records = read_metrics(metrics)
        train = [r for r in records if "train_loss" in r]
        val = [r for r in records if "val_loss" in r]
        steps, losses = [r["step"] for r in train], [r["train_loss"] for r in train]
        line = ax.plot(steps, losses, lw=0.8, alpha=0.6, label=f"{run_dir.name} train")[0]
        if val:
            steps, losses = [r["step"] for r in val], [r["val_loss"] for r in val]
            ax.plot(steps, losses, "o-", color=line.get_color(), label=f"{run_dir.name} val")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/token)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
