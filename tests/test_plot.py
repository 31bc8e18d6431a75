"""`nima plot`: a figure of the runs' losses, or an error naming the runs that have none."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nima import cli
from nima.errors import RunDirError
from nima.plot import plot_runs


def make_run(root: Path, name: str, records: list[dict]) -> Path:
    run_dir = root / name
    run_dir.mkdir()
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return run_dir


def test_plots_train_and_val_losses(tmp_path: Path) -> None:
    run = make_run(tmp_path, "run", [{"step": 1, "train_loss": 4.0}, {"step": 2, "val_loss": 3.5}])
    out = plot_runs([run], tmp_path / "figs" / "loss.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_runs_without_losses_are_named_and_nothing_is_written(tmp_path: Path) -> None:
    good = make_run(tmp_path, "good", [{"step": 1, "train_loss": 4.0}])
    empty = make_run(tmp_path, "empty", [])
    no_loss = make_run(tmp_path, "no_loss", [{"step": 0, "lr": 0.001}])
    missing = tmp_path / "missing"
    no_metrics = tmp_path / "no_metrics"
    no_metrics.mkdir()
    out = tmp_path / "loss.png"
    with pytest.raises(RunDirError) as info:
        plot_runs([good, empty, no_loss, missing, no_metrics], out)
    message = str(info.value)
    assert f"{empty} (metrics.jsonl has no train_loss or val_loss)" in message
    assert f"{no_loss} (metrics.jsonl has no train_loss or val_loss)" in message
    assert f"{missing} (no such folder)" in message
    assert f"{no_metrics} (no metrics.jsonl)" in message
    assert str(good) + " " not in message and "nima run" in message
    assert not out.exists()


def test_cli_exits_2_and_writes_no_figure(tmp_path: Path, capsys) -> None:
    empty = make_run(tmp_path, "empty", [])
    assert cli.main(["plot", str(empty)]) == 2
    assert "Nothing to plot" in capsys.readouterr().err
    assert not (empty / "loss.png").exists()
