"""Loggers chosen in gin: metrics.jsonl always, TensorBoard and CSV read back by their own
readers, and a logger that raises is reported once and dropped while training goes on."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from nima.hooks import reset
from nima.hookspecs import hookimpl
from nima.runs.records import read_metrics
from nima.train.run import run_experiment

SMOKE = Path(__file__).resolve().parents[1] / "experiments" / "smoke.gin"
BINDS = [
    "train.dataset = @dataset.techqa()",
    "train.steps = 6",
    "train.log_interval = 2",
    "train.eval_interval = 3",
    "train.final_eval = 'batches'",
    "train.sample_tokens = 0",
    "train.sample_prompt = 'The'",
]


def train(run_dir: Path, *extra: str, system=None) -> dict:
    return run_experiment(
        [SMOKE], [*BINDS, *extra], system or reset(), run_dir=run_dir, show_progress=False
    )


def test_tensorboard_and_csv_hold_what_metrics_jsonl_holds(tmp_path) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = tmp_path / "run"
    train(run_dir, "train.loggers = [@logger.tensorboard(), @logger.csv()]")
    records = read_metrics(run_dir)  # jsonl is always written, listed or not
    losses = {r["step"]: r["train_loss"] for r in records if "train_loss" in r}
    assert sorted(losses) == [2, 4, 6]

    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    scalars = events.Scalars("train/train_loss")
    assert [e.step for e in scalars] == [2, 4, 6]
    assert [e.value for e in scalars] == pytest.approx([losses[s] for s in (2, 4, 6)], rel=1e-6)
    assert [e.step for e in events.Scalars("eval/val_loss")] == [3, 6]

    with open(run_dir / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    csv_losses = {int(r["step"]): float(r["value"]) for r in rows if r["name"] == "train_loss"}
    assert csv_losses == losses
    assert {r["event"] for r in rows} == {"train", "eval"}


class Broken:
    """A logger whose every step event raises."""

    def __init__(self) -> None:
        self.calls = 0

    @hookimpl
    def nima_train_step(self, run, step, metrics) -> None:
        self.calls += 1
        raise RuntimeError("disk full")


def test_a_logger_that_raises_is_reported_once_and_dropped(tmp_path, capsys) -> None:
    system, broken = reset(), Broken()
    system.pm.register(broken, name="broken-logger")
    summary = train(tmp_path / "run", system=system)
    assert summary["steps"] == 6 and not summary["interrupted"]
    assert broken.calls == 1
    err = capsys.readouterr().err
    assert err.count("broken-logger raised RuntimeError: disk full") == 1
    steps = [r["step"] for r in read_metrics(tmp_path / "run") if "train_loss" in r]
    assert steps == [2, 4, 6]  # the others kept logging


def test_loggers_are_a_plugin_family_checked_in_gin(tmp_path) -> None:
    from nima.errors import UnknownPluginError

    with pytest.raises(UnknownPluginError, match="tensorbord.*Did you mean 'tensorboard'"):
        train(tmp_path / "run", "train.loggers = [@logger.tensorbord()]")
    assert not (tmp_path / "run").exists()
    assert set(reset().registries["logger"].names()) >= {"jsonl", "progress", "tensorboard", "csv"}
