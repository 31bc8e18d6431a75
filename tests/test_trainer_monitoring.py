"""Monitoring: grad norm, FLOP/s estimate and loss spikes in the metrics; a NaN loss stops the
run naming the step and tensor (the last good checkpoint kept) or is skipped and counted."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from nima.hooks import reset
from nima.runs import read_checkpoint
from nima.runs.records import read_metrics
from nima.train import objectives
from nima.train.run import run_experiment
from nima.train.trainer import Diverged

SMOKE = Path(__file__).resolve().parents[1] / "experiments" / "smoke.gin"
BINDS = [
    "train.dataset = @dataset.techqa()",
    "train.log_interval = 1",
    "train.eval_interval = 100",
    "train.checkpoint_interval = 3",
    "train.final_eval = 'batches'",
    "train.sample_tokens = 0",
    "train.sample_prompt = 'The'",
]


def train(tmp_path: Path, *extra: str) -> dict:
    return run_experiment(
        [SMOKE], [*BINDS, *extra], reset(), run_dir=tmp_path / "run", show_progress=False
    )


def bad_loss_at(monkeypatch, step: int, factor: float) -> None:
    """Training step `step`'s loss times `factor` (evaluation untouched)."""
    original, calls = objectives.CausalLM.loss, [0]

    def loss(self, model, batch):
        value = original(self, model, batch)
        if model.training:
            calls[0] += 1
            if calls[0] == step:
                return value * factor
        return value

    monkeypatch.setattr(objectives.CausalLM, "loss", loss)


def test_metrics_hold_grad_norm_and_achieved_flops(tmp_path) -> None:
    train(tmp_path, "train.steps = 3")
    records = [r for r in read_metrics(tmp_path / "run") if "train_loss" in r]
    assert [r["step"] for r in records] == [1, 2, 3]
    for r in records:
        assert r["grad_norm"] > 0 and r["loss_spikes"] == 0
        assert r["flops_per_s"] > r["tokens_per_s"] > 0  # 6 x parameters FLOPs per token


def test_layer_stats_are_logged_every_n_steps_and_add_up_to_the_grad_norm(tmp_path) -> None:
    train(tmp_path, "train.steps = 5", "train.log_interval = 2", "train.layer_stats_interval = 3")
    records = [r for r in read_metrics(tmp_path / "run") if "train_loss" in r]
    assert [r["step"] for r in records] == [2, 3, 4, 5]  # step 3 logged for its layer stats
    with_layers = [r for r in records if any(k.startswith("update_ratio/") for k in r)]
    assert [r["step"] for r in with_layers] == [3]
    (r,) = with_layers
    layers = sorted(k.removeprefix("grad_norm/") for k in r if k.startswith("grad_norm/"))
    assert "blocks.0" in layers and "token_embedding" in layers, layers
    for layer in layers:
        assert r[f"weight_norm/{layer}"] > 0 and 0 < r[f"update_ratio/{layer}"] < 1, layer
    by_layer = math.sqrt(sum(r[f"grad_norm/{layer}"] ** 2 for layer in layers))
    assert by_layer == pytest.approx(r["grad_norm"], rel=1e-4)  # both before clipping


def test_a_nan_loss_stops_naming_step_and_tensor_and_keeps_the_last_good_checkpoint(
    tmp_path, monkeypatch
) -> None:
    bad_loss_at(monkeypatch, 5, math.nan)
    with pytest.raises(Diverged, match=r"diverged at step 5: the loss is nan and the first "
                                       r"non-finite gradient is '[\w.]+'"):  # fmt: skip
        train(tmp_path, "train.steps = 10")
    last = tmp_path / "run" / "checkpoints" / "last.safetensors"
    assert read_checkpoint(last)["step"] == 3  # not overwritten with a diverged state


def test_skip_policy_skips_and_counts_the_step(tmp_path, monkeypatch, capsys) -> None:
    bad_loss_at(monkeypatch, 2, math.inf)
    summary = train(tmp_path, "train.steps = 4", "train.nonfinite = 'skip'")
    assert summary["steps"] == 4 and math.isfinite(summary["final_val_loss"])
    records = [r for r in read_metrics(tmp_path / "run") if "train_loss" in r]
    assert [r["nonfinite_skipped"] for r in records] == [0, 1, 1, 1]
    assert "step 2: non-finite loss or gradient; step skipped" in capsys.readouterr().err


def test_a_loss_spike_is_warned(tmp_path, monkeypatch, capsys) -> None:
    bad_loss_at(monkeypatch, 15, 10.0)
    train(tmp_path, "train.steps = 15", "train.spike_factor = 3.0")
    assert "warning: loss spike at step 15" in capsys.readouterr().err
    assert read_metrics(tmp_path / "run")[-2]["loss_spikes"] == 1  # [-1] is the evaluation
