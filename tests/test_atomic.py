"""nima.atomic: whole files or nothing, usual permissions, strict JSON."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from nima import atomic


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    atomic.write_text(path, "old")
    with pytest.raises(RuntimeError), atomic.atomic_path(path) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_files_and_folders_get_the_umask_mode(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        atomic.write_text(tmp_path / "f.txt", "x")
        with atomic.atomic_dir(tmp_path / "d") as folder:
            (folder / "inner").write_text("y")
    finally:
        os.umask(old)
    assert (tmp_path / "f.txt").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "d").stat().st_mode & 0o777 == 0o755


def test_json_is_strict(tmp_path: Path) -> None:
    atomic.write_json(tmp_path / "s.json", {"best": float("inf"), "xs": [float("nan"), 1.5]})
    text = (tmp_path / "s.json").read_text()
    assert json.loads(text, parse_constant=lambda c: pytest.fail(f"non-JSON {c}")) == {
        "best": None,
        "xs": [None, 1.5],
    }


def test_a_folder_that_appeared_meanwhile_is_kept(tmp_path: Path) -> None:
    target = tmp_path / "entry"
    with pytest.raises(FileExistsError), atomic.atomic_dir(target) as folder:
        (folder / "mine").write_text("1")
        target.mkdir()
        (target / "theirs").write_text("2")
    assert [p.name for p in target.iterdir()] == ["theirs"]
    assert [p.name for p in tmp_path.iterdir()] == ["entry"]


def test_metrics_and_checkpoint_header_are_strict_json(tmp_path: Path) -> None:
    """A diverged loss (NaN) must not make metrics.jsonl or a checkpoint unreadable elsewhere."""
    import torch

    from nima.runs.checkpoint import read_checkpoint, save_checkpoint
    from nima.train.metrics import MetricsFile

    metrics = MetricsFile(tmp_path / "metrics.jsonl")
    metrics.nima_train_step(run=None, step=1, metrics={"train_loss": float("nan")})
    metrics.close()
    strict = lambda text: json.loads(text, parse_constant=lambda c: pytest.fail(f"non-JSON {c}"))
    assert strict((tmp_path / "metrics.jsonl").read_text()) == {"step": 1, "train_loss": None}
    save_checkpoint(torch.nn.Linear(2, 2), tmp_path / "c.safetensors", {"val_loss": float("inf")})
    assert read_checkpoint(tmp_path / "c.safetensors")["val_loss"] is None
