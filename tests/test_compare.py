"""`nima compare` on run directories written by hand, so every number is known."""

import json
import math

import pytest

from nima.cli import main
from nima.compare import NOISE_Z, compare_runs, seed_noise
from nima.errors import RunDirError


def write_run(path, train, val=None, summary=True):
    """A run directory holding what the comparison reads: metrics.jsonl (and summary.json)."""
    path.mkdir(parents=True)
    lines = [{"step": s, "train_loss": v} for s, v in train.items()]
    lines += [{"step": s, "val_loss": v} for s, v in (val or {}).items()]
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    if summary:
        summary = {"interrupted": False, "final_val_loss": 1.0, "tokens_per_s": 1.0, "wall_s": 1.0}
        (path / "summary.json").write_text(json.dumps(summary))
    return path


def test_first_difference_and_largest(tmp_path):
    a = write_run(tmp_path / "a", {1: 4.0, 2: 3.5, 3: 3.0}, {3: 3.2})
    b = write_run(tmp_path / "b", {1: 4.0, 2: 3.6, 3: 2.8}, {3: 3.2})
    train, val = compare_runs(a, b)
    assert train.first_difference == 2
    assert train.largest == (3, pytest.approx(-0.2))
    assert val.first_difference is None
    assert not train.noise and not train.outside_noise()


def test_seed_noise_from_a_study_decides_inside_or_outside(tmp_path):
    study = tmp_path / "study"
    plan = {"study_file": "s.gin", "metric": "final_val_loss", "lower_is_better": True,
            "baseline": "x", "seeds": [1, 2], "steps": 2,
            "variants": [{"name": "x", "bindings": []}, {"name": "y", "bindings": []}]}  # fmt: skip
    study.mkdir()
    (study / "study.json").write_text(json.dumps(plan))
    # seed-to-seed deviations: x differs by 0.2 at step 1 and 0.0 at step 2, y by 0.4 and 0.0
    write_run(study / "runs/x/seed1", {1: 3.0, 2: 2.0})
    write_run(study / "runs/x/seed2", {1: 3.2, 2: 2.0})
    write_run(study / "runs/y/seed1", {1: 3.0, 2: 2.0})
    write_run(study / "runs/y/seed2", {1: 3.4, 2: 2.0})
    # pooled variance at step 1: (0.02 + 0.08) / 2 = 0.05; at step 2: 0
    sigma = seed_noise(study)["train_loss"]
    assert sigma == pytest.approx({1: math.sqrt(0.05), 2: 0.0})

    a = study / "runs/x/seed1"
    b = write_run(tmp_path / "b", {1: 3.0 + 0.9 * NOISE_Z * math.sqrt(0.05), 2: 2.0})
    (drift,) = compare_runs(a, b, study)
    assert drift.outside_noise() == []
    c = write_run(tmp_path / "c", {1: 3.0, 2: 2.001})  # any change where seeds agree exactly
    (drift,) = compare_runs(a, c, study)
    assert drift.outside_noise() == [2]


def test_cli_finds_the_study_and_writes_table_and_plot(tmp_path, capsys):
    test_seed_noise_from_a_study_decides_inside_or_outside(tmp_path)
    out = tmp_path / "cmp.png"
    code = main(
        ["compare", str(tmp_path / "study/runs/x/seed1"), str(tmp_path / "c"), "--out", str(out)]
    )
    text = capsys.readouterr().out
    assert code == 0
    assert f"seed noise from the study {tmp_path / 'study'}" in text
    assert "first differs at step 2" in text
    assert "outside the seed noise" in text and "first 2" in text
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = out.with_suffix(".csv").read_text().splitlines()
    assert rows[0] == "step,train_loss_a,train_loss_b,train_loss_diff,train_loss_noise_band"
    assert len(rows) == 3


def test_not_a_run_directory(tmp_path):
    with pytest.raises(RunDirError, match="does not exist"):
        compare_runs(tmp_path / "nope", tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RunDirError, match="no logged losses"):
        compare_runs(tmp_path / "empty", tmp_path / "empty")
