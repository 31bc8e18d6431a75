"""The trainer's helpers: evaluation and generation keep the caller's mode; the final whole-split
evaluation shows its progress; a run announces where it writes before it trains."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import nima
from nima.generate import SamplerChain, generate
from nima.hooks import reset
from nima.train.run import run_experiment
from nima.train.trainer import evaluate

SMOKE = Path(__file__).resolve().parents[1] / "experiments" / "smoke.gin"


def _model() -> torch.nn.Module:
    parts = dict(
        attention=nima.get("attention", "sdpa")(), positional=nima.get("positional", "rope")
    )
    return nima.get("model", "gpt")(vocab_size=11, context_length=8, d_model=16, n_layers=1,
                                    n_heads=2, dropout=0.1, **parts)  # fmt: skip


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_evaluate_and_generate_keep_the_callers_mode(training: bool) -> None:
    model = _model().train(training)
    x = torch.randint(11, (2, 8))
    evaluate(model, [(x, x)])
    assert model.training is training
    generate(model, x[:, :3], 2, SamplerChain(), generator=torch.Generator().manual_seed(0))
    assert model.training is training
    assert all(m.training is training for m in model.modules())


def test_a_run_announces_itself_and_shows_the_final_evaluation(tmp_path, capsys) -> None:
    bindings = [
        "train.dataset = @dataset.techqa()",
        "train.steps = 2",
        "train.final_eval = 'full'",
        "train.sample_prompt = 'The'",
        "train.sample_tokens = 2",
    ]
    run_dir = tmp_path / "run"
    run_experiment([SMOKE], bindings, reset(), run_dir=run_dir, show_progress=True)
    err = capsys.readouterr().err
    first = err.splitlines()[0]
    assert first.startswith(f"run dir {run_dir}  device cpu  ") and "parameters" in first
    assert "final eval: " in err and "batches" in err  # not a silent pause
