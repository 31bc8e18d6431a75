"""torch.distributed on 2 CPU processes (gloo): the loss curve of `nima run --nproc 2` (DDP, and
FSDP2 with train.parallel = 'fsdp') is the curve of one process with the same effective batch,
and rank 0 alone writes the run; FSDP's checkpoint is one process's format and resumes exactly."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import safe_open

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


def nima_run(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", "nima", "run", *args, "--no-progress"],
        cwd=cwd, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return proc


@pytest.mark.slow  # torchrun and two ranks importing torch: ~20 s on 2 cores
def test_two_ranks_train_as_one_process_with_the_same_effective_batch(tmp_path) -> None:
    ranks = tmp_path / "ddp"
    binds = [a for b in BINDS for a in ("--bind", b)]
    proc = nima_run(tmp_path, str(SMOKE), "--nproc", "2", *binds, "--run-dir", str(ranks))
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


def checkpoint_layout(path: Path) -> tuple[list[tuple[str, tuple[int, ...]]], Any]:
    """Tensor names and shapes, and the training state's structure (the optimizer's numbering)."""
    with safe_open(str(path), "pt") as f:
        shapes = sorted((n, tuple(f.get_slice(n).get_shape())) for n in f.keys())
        state = json.loads(f.metadata()["nima_train"])
    return shapes, state["optimizer"]["param_groups"]


@pytest.mark.slow  # three torchrun launches of two ranks: ~40 s on 2 cores
def test_fsdp_trains_as_one_process_writes_the_same_checkpoint_and_resumes_exactly(
    tmp_path,
) -> None:
    binds = [a for b in [*BINDS, "train.parallel = 'fsdp'"] for a in ("--bind", b)]
    sharded = tmp_path / "fsdp"
    proc = nima_run(tmp_path, str(SMOKE), "--nproc", "2", *binds, "--run-dir", str(sharded))
    assert proc.stdout.count("best val loss") == 1  # rank 0 alone reports
    one = tmp_path / "one"
    run_experiment([SMOKE], [*BINDS, "train.accumulation_steps = 2"], reset(), run_dir=one,
                   show_progress=False)  # fmt: skip

    assert list(curve(sharded)) == list(range(1, 7))  # each step written once
    assert curve(sharded) == pytest.approx(curve(one), rel=1e-5)  # fp32 summation order only
    assert curve(sharded, "val_loss") == pytest.approx(curve(one, "val_loss"), rel=1e-5)
    assert curve(sharded, "grad_norm") == pytest.approx(curve(one, "grad_norm"), rel=1e-4)
    assert curve(sharded, "tokens") == curve(one, "tokens")
    # the full (gathered) state, in one process's format: same tensors, same optimizer numbering
    last = Path("checkpoints") / "last.safetensors"
    assert checkpoint_layout(sharded / last) == checkpoint_layout(one / last)
    with safe_open(str(sharded / last), "pt") as a, safe_open(str(one / last), "pt") as b:
        for name in b.keys():  # weights and optimizer moments agree to fp32 noise
            torch.testing.assert_close(a.get_tensor(name), b.get_tensor(name), rtol=1e-4, atol=1e-6)

    # stopped at step 3, resumed under FSDP (the full state re-sharded): the same run exactly
    resumed = tmp_path / "resumed"
    nima_run(tmp_path, str(SMOKE), "--nproc", "2", *binds, "--bind", "train.steps = 3",
             "--run-dir", str(resumed))  # fmt: skip
    nima_run(tmp_path, "--resume", str(resumed), "--nproc", "2", "--bind", "train.steps = 6")
    assert curve(resumed) == curve(sharded)
    assert curve(resumed, "val_loss") == curve(sharded, "val_loss")
    with safe_open(str(resumed / last), "pt") as a, safe_open(str(sharded / last), "pt") as b:
        assert all(torch.equal(a.get_tensor(n), b.get_tensor(n)) for n in b.keys())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fsdp", "one", "resumed"]
