"""train.compile: the model's training steps run through torch.compile; its warm-up and speedup
are reported, and training computes what eager training computes."""

from __future__ import annotations

from pathlib import Path

import pytest

from nima.hooks import reset
from nima.runs.records import read_metrics
from nima.train.run import run_experiment

SMOKE = Path(__file__).resolve().parents[1] / "experiments" / "smoke.gin"
BINDS = [
    "train.dataset = @dataset.techqa()",
    "train.steps = 4",
    "train.log_interval = 1",
    "train.final_eval = 'batches'",
    "train.sample_tokens = 0",
    "train.sample_prompt = 'The'",
]


@pytest.mark.slow  # inductor compiles C++ on the CPU: ~30 s on 2 cores
def test_compiled_training_matches_eager_and_reports_warmup_and_speedup(tmp_path, capsys) -> None:
    eager = run_experiment([SMOKE], BINDS, reset(), run_dir=tmp_path / "eager", show_progress=False)
    compiled = run_experiment(
        [SMOKE], [*BINDS, "train.compile = True"], reset(), run_dir=tmp_path / "compiled",
        show_progress=False,
    )  # fmt: skip
    assert "compile_warmup_s" not in eager
    assert compiled["compile_warmup_s"] > 0 and compiled["compile_speedup"] > 0
    assert "torch.compile: warm-up" in capsys.readouterr().err
    losses = [
        [r["train_loss"] for r in read_metrics(tmp_path / name) if "train_loss" in r]
        for name in ("eager", "compiled")
    ]
    assert losses[1] == pytest.approx(losses[0], rel=1e-4)  # fused kernels: fp32 rounding only
