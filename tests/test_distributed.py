"""torch.distributed on 2 CPU processes (gloo): the loss curve of `nima run --nproc 2` is the
curve of one process with the same effective batch, and rank 0 alone writes the run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from nima.hooks import reset
from nima.runs import read_checkpoint
from nima.runs.records import read_metrics
from nima.train.run import run_experiment

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "experiments" / "smoke.gin"
BINDS = [
    "train.dataset = @dataset.techqa()",
    "train.batch_size = 4",  # per process and micro-batch
    "train.steps = 6",
    "train.log_interval = 1",
    "train.eval_interval = 3",
    "train.final_eval = 'batches'",
    "train.sample_tokens = 0",
    "train.sample_prompt = 'The'",
]


def curve(run_dir: Path, key: str = "train_loss") -> dict[int, float]:
    return {r["step"]: r[key] for r in read_metrics(run_dir) if key in r}


@pytest.mark.slow  # torchrun and two ranks importing torch: ~20 s on 2 cores
def test_two_ranks_train_as_one_process_with_the_same_effective_batch(tmp_path) -> None:
    ranks = tmp_path / "ddp"
    binds = [a for b in BINDS for a in ("--bind", b)]
    proc = subprocess.run(
        [sys.executable, "-m", "nima", "run", str(SMOKE), "--nproc", "2", *binds,
         "--run-dir", str(ranks), "--no-progress"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("best val loss") == 1  # rank 0 alone reports
    one = tmp_path / "one"
    run_experiment([SMOKE], [*BINDS, "train.accumulation_steps = 2"], reset(), run_dir=one,
                   show_progress=False)  # fmt: skip

    assert list(curve(ranks)) == list(range(1, 7))  # each step written once
    assert curve(ranks) == pytest.approx(curve(one), rel=1e-5)  # fp32 summation order only
    assert curve(ranks, "val_loss") == pytest.approx(curve(one, "val_loss"), rel=1e-5)
    assert curve(ranks, "tokens") == curve(one, "tokens")  # micro x accumulation x world
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ddp", "one"]  # no other run dir
    assert read_checkpoint(ranks / "checkpoints" / "last.safetensors")["step"] == 6
