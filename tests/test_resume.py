"""`nima run --resume`: a run killed, interrupted or finished goes on bit for bit (CPU) as if it
had never stopped: the same per-step losses and the same final weights."""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from nima.errors import ConfigError, RunDirError
from nima.hooks import reset
from nima.runs import read_checkpoint, read_training_state, reclaim
from nima.runs.checkpoint import STATE_PREFIX
from nima.runs.records import read_metrics
from nima.train.run import run_experiment

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "experiments" / "smoke.gin"
# constant lr after a warmup: the schedule does not depend on train.steps, so a run killed
# on its way to a million steps is, up to step k, the run of k steps; dropout uses torch's RNG
BINDS = [
    "train.dataset = @dataset.techqa()",
    "train.scheduler = @scheduler.constant",
    "scheduler.constant.warmup_steps = 10",
    "GPT.dropout = 0.1",
    "train.log_interval = 1",
    "train.eval_interval = 7",
    "train.checkpoint_interval = 3",
    "train.final_eval = 'batches'",
    "train.sample_prompt = 'The'",
    "train.sample_tokens = 0",
]


def run(run_dir: Path, *extra: str, resume: bool = False) -> dict:
    bindings = [*BINDS, *extra]
    files = [] if resume else [SMOKE]
    return run_experiment(
        files, bindings, reset(), run_dir=None if resume else run_dir, show_progress=False,
        resume=run_dir if resume else None,
    )  # fmt: skip


def weights_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with safe_open(str(path), framework="pt") as f:
        for name in sorted(n for n in f.keys() if not n.startswith(STATE_PREFIX)):
            digest.update(name.encode() + f.get_tensor(name).numpy().tobytes())
    return digest.hexdigest()


def losses(run_dir: Path) -> list[tuple[int, float]]:
    return [(r["step"], r["train_loss"]) for r in read_metrics(run_dir) if "train_loss" in r]


def test_a_killed_run_resumes_bit_for_bit(tmp_path) -> None:
    killed = tmp_path / "killed"
    binds = [a for b in [*BINDS, "train.steps = 1000000"] for a in ("--bind", b)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "nima.cli", "run", str(SMOKE), *binds, "--run-dir", str(killed),
         "--no-progress"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    last = killed / "checkpoints" / "last.safetensors"
    deadline = time.monotonic() + 120
    while not (last.exists() and read_checkpoint(last)["step"] >= 9):
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)  # no handler, no cleanup: as a crash or an OOM kill
    proc.wait()
    step = read_checkpoint(last)["step"]
    assert max(s for s, _ in losses(killed)) >= step  # the killed run logged past its checkpoint
    target = step + 11

    summary = run(killed, f"train.steps = {target}", resume=True)
    assert summary["steps"] == target and not summary["interrupted"]
    reference = tmp_path / "reference"
    run(reference, f"train.steps = {target}")

    resumed_losses = losses(killed)
    assert [s for s, _ in resumed_losses] == list(range(1, target + 1))  # no step twice
    assert resumed_losses == losses(reference)  # exactly equal floats
    assert weights_hash(last) == weights_hash(reference / "checkpoints" / "last.safetensors")
    info = json.loads((killed / "run.json").read_text())
    assert info["resumes"][0]["step"] == step


def test_an_interrupted_and_a_finished_run_go_on_exactly(tmp_path) -> None:
    class CtrlCAt:
        from nima.hookspecs import hookimpl

        @hookimpl
        def nima_train_step(self, run, step, metrics) -> None:
            if step == 5:
                signal.raise_signal(signal.SIGINT)

    system = reset()
    system.pm.register(CtrlCAt())
    a = tmp_path / "a"
    summary = run_experiment(
        [SMOKE], [*BINDS, "train.steps = 12"], system, run_dir=a, show_progress=False
    )
    assert summary["interrupted"] and summary["steps"] == 5
    assert run(a, "train.steps = 12", resume=True)["steps"] == 12  # from Ctrl-C's `last`
    assert run(a, "train.steps = 20", resume=True)["steps"] == 20  # a finished run, more steps
    reference = tmp_path / "reference"
    summary = run(reference, "train.steps = 20")
    assert losses(a) == losses(reference)
    assert weights_hash(a / "checkpoints/last.safetensors") == weights_hash(
        reference / "checkpoints/last.safetensors"
    )
    assert json.loads((a / "summary.json").read_text())["final_val_loss"] == pytest.approx(
        summary["final_val_loss"], abs=0
    )


def test_the_training_state_round_trips_without_pickle(tmp_path) -> None:
    run(tmp_path / "r", "train.steps = 3")
    state = read_training_state(tmp_path / "r" / "checkpoints" / "last.safetensors")
    assert state["step"] == 3 and state["tokens"] == 3 * 8 * 32
    assert set(state["rng"]) >= {"python", "numpy", "torch", "batches"}
    assert isinstance(state["optimizer"]["state"], dict) and 0 in state["optimizer"]["state"]
    assert isinstance(state["optimizer"]["param_groups"][0]["betas"], tuple)
    assert torch.is_tensor(state["optimizer"]["state"][0]["exp_avg"])
    assert state["rng"]["numpy"][1].dtype.name == "uint32"


def test_resume_refusals(tmp_path) -> None:
    run(tmp_path / "r", "train.steps = 3")
    with pytest.raises(ConfigError, match=r"trained 3 steps.*train.steps = 6"):
        run(tmp_path / "r", resume=True)
    with pytest.raises(ConfigError, match="give no gin files"):
        run_experiment([SMOKE], [], reset(), resume=tmp_path / "r")
    with pytest.raises(RunDirError, match="not a run directory"):
        run(tmp_path / "nothing", resume=True)
    done = tmp_path / "r"
    holder = subprocess.Popen(  # another process that holds the run's claim lock
        [sys.executable, "-c", "import sys, time; from nima.runs import reclaim; "
         f"reclaim({str(done)!r}); print('held', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True, cwd=ROOT,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunDirError, match="still going in another process"):
            reclaim(done)
    finally:
        holder.kill()
        holder.wait()


def test_resume_needs_the_same_number_of_processes(tmp_path) -> None:
    from safetensors.torch import save_file

    from nima.runs.checkpoint import HEADER_KEY, STATE_KEY, _flatten

    run(tmp_path / "r", "train.steps = 3")
    last = tmp_path / "r" / "checkpoints" / "last.safetensors"
    state = read_training_state(last) | {"world_size": 2}  # as if two ranks had saved it
    with safe_open(str(last), framework="pt") as f:
        tensors = {n: f.get_tensor(n) for n in f.keys() if not n.startswith(STATE_PREFIX)}
    header = {"format": "pt", HEADER_KEY: json.dumps(read_checkpoint(last)),
              STATE_KEY: json.dumps(_flatten(state, tensors, ""))}  # fmt: skip
    save_file(tensors, str(last), metadata=header)
    with pytest.raises(ConfigError, match=r"saved by 2 training process\(es\).*--nproc 2"):
        run(tmp_path / "r", "train.steps = 6", resume=True)
