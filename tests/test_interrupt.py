"""Ctrl-C during training: stop at a step boundary, save `last`, say so truthfully, exit 130."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from nima.hooks import reset
from nima.hookspecs import hookimpl
from nima.runs import read_checkpoint
from nima.train.run import interrupted_message, run_experiment
from nima.train.trainer import StopRequest

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "experiments" / "smoke.gin"
TINY = [
    "train.dataset = @dataset.techqa()",
    "train.log_interval = 1",
    "train.eval_interval = 10",
    "train.sample_prompt = 'The'",
]


class CtrlCAt:
    """Presses Ctrl-C (a real SIGINT to this process) while step `at` is being logged."""

    def __init__(self, at: int) -> None:
        self.at, self.steps = at, []

    @hookimpl
    def nima_train_step(self, run, step, metrics) -> None:
        self.steps.append(step)
        if step == self.at:
            os.kill(os.getpid(), signal.SIGINT)


def _interrupted_run(tmp_path: Path, at: int) -> tuple[dict, CtrlCAt]:
    system, ctrl_c = reset(), CtrlCAt(at)
    system.pm.register(ctrl_c)
    summary = run_experiment([SMOKE], TINY, system, run_dir=tmp_path / "run", show_progress=False)
    return summary, ctrl_c


def test_ctrl_c_before_any_evaluation_saves_last_and_claims_no_best(tmp_path) -> None:
    summary, ctrl_c = _interrupted_run(tmp_path, at=4)
    assert ctrl_c.steps == [1, 2, 3, 4]  # step 4 finished, step 5 never started
    assert summary["interrupted"] and summary["steps"] == 4 and summary["best_step"] is None
    assert "final_val_loss" not in summary and "sample" not in summary
    checkpoints = tmp_path / "run" / "checkpoints"
    assert [p.name for p in checkpoints.iterdir()] == ["last.safetensors"]
    assert read_checkpoint(checkpoints / "last.safetensors")["step"] == 4
    saved = json.loads((tmp_path / "run" / "summary.json").read_text(), parse_constant=pytest.fail)
    assert saved["best_batches_val_loss"] is None  # was Infinity: not JSON
    message = interrupted_message(summary)
    assert "interrupted at step 4" in message and "no best checkpoint" in message
    assert "step 0" not in message and "--checkpoint last" in message


def test_ctrl_c_after_an_evaluation_keeps_best_and_saves_last(tmp_path) -> None:
    summary, ctrl_c = _interrupted_run(tmp_path, at=13)
    assert ctrl_c.steps[-1] == 13 and summary["steps"] == 13 and summary["best_step"] == 10
    checkpoints = tmp_path / "run" / "checkpoints"
    assert read_checkpoint(checkpoints / "best.safetensors")["step"] == 10
    assert read_checkpoint(checkpoints / "last.safetensors")["step"] == 13
    assert "best.safetensors holds step 10" in interrupted_message(summary)


def test_a_second_ctrl_c_aborts_at_once() -> None:
    before = signal.getsignal(signal.SIGINT)  # SIG_IGN where the tests run in the background
    stop = StopRequest()
    with stop.listening():
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.requested
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is before  # handler restored


def test_nima_run_interrupted_exits_130_and_says_how_to_go_on(tmp_path) -> None:
    run_dir = tmp_path / "run"
    binds = [a for b in [*TINY, "train.steps = 1000000"] for a in ("--bind", b)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "nima.cli", "run", str(SMOKE), *binds, "--run-dir", str(run_dir)],
        stderr=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    lines = []
    for line in proc.stderr:  # the progress display prints plain lines when not a terminal
        lines.append(line)
        if line.startswith("step 3/"):
            proc.send_signal(signal.SIGINT)
            break
    out, err = proc.communicate(timeout=300)
    err = "".join(lines) + err
    assert proc.returncode == 130, err
    assert lines[0].startswith(f"run dir {run_dir}  device cpu") and "parameters" in lines[0]
    step = int(re.search(r"interrupted at step (\d+)", err).group(1))
    assert step >= 3 and "Traceback" not in err
    assert read_checkpoint(run_dir / "checkpoints" / "last.safetensors")["step"] == step
    assert f"nima generate {run_dir} --checkpoint last" in err
    sample = subprocess.run(
        [sys.executable, "-m", "nima.cli", "generate", str(run_dir), "--checkpoint", "last",
         "--prompt", "The", "--max-new-tokens", "5"],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )  # fmt: skip
    assert sample.returncode == 0 and sample.stdout.startswith("The"), sample.stderr


def test_ctrl_c_during_the_final_evaluation_still_writes_the_summary(tmp_path, monkeypatch) -> None:
    from nima.train.trainer import Trainer

    def ctrl_c(self, track=None, split="val"):
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "final_evaluation", ctrl_c)
    bindings = [*TINY, "train.steps = 10"]
    summary = run_experiment(
        [SMOKE], bindings, reset(), run_dir=tmp_path / "run", show_progress=False
    )
    assert summary["interrupted"] and summary["steps"] == 10 and summary["best_step"] == 10
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["interrupted"]
    assert "interrupted at step 10" in interrupted_message(summary)
