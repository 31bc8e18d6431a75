"""Studies: the study file, the launchers, and `nima ablate` end to end (killed, resumed, a
variant failing), then `nima study report` and `nima compare` on what it ran."""

import csv
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nima.cli import main
from nima.errors import NimaError, RunDirError
from nima.hooks import for_command
from nima.study import Job, load_study
from nima.study.report import write_report

SMOKE = Path(__file__).resolve().parent.parent / "experiments" / "smoke.gin"


def study_file(tmp_path, body, budget="train.steps = 6"):
    path = tmp_path / "study.gin"
    path.write_text(f"include '{SMOKE}'\n{budget}\ntrain.threads = 1\n{body}\n")
    return path


GRID = "study.grid = {'GPT.positional': [@positional.rope, @positional.learned]}"


# -- the study file -----------------------------------------------------------------------------


def test_grid_crossed_with_zipped_axes(tmp_path):
    body = (
        GRID + "\nstudy.zipped = {'GPT.d_model': [32, 64], 'GPT.n_heads': [2, 4]}\n"
        "study.seeds = [5, 6]\nstudy.baseline = 'learned,d_model=64,n_heads=4'"
    )
    study = load_study(study_file(tmp_path, body), [], for_command(None))
    assert [v.name for v in study.variants] == [
        "rope,d_model=32,n_heads=2",
        "rope,d_model=64,n_heads=4",
        "learned,d_model=32,n_heads=2",
        "learned,d_model=64,n_heads=4",
    ]
    assert study.variants[1].bindings == (
        "GPT.positional = @positional.rope",
        "GPT.d_model = 64",
        "GPT.n_heads = 4",
    )
    assert study.seeds == (5, 6) and study.baseline == "learned,d_model=64,n_heads=4"
    assert "study." not in study.experiment and "GPT.n_layers = 2" in study.experiment
    assert "study.zipped" in study.config


@pytest.mark.parametrize(
    "body, message",
    [
        ("", "is not a study: it sets neither study.grid nor study.zipped"),
        (
            "study.grid = {'GPT.positionl': [@positional.rope]}",
            "variant 'rope'.*Did you mean positional",
        ),
        (
            "study.grid = {'GPT.n_layers': ['four']}",
            "variant 'n_layers=four'.*GPT.n_layers takes an int",
        ),
        (GRID + "\nstudy.metric = 'val_los'", "study.metric = 'val_los'.*one of 'final_val_loss'"),
        (GRID + "\nstudy.baseline = 'alibi'", "'alibi' is not a variant.*'rope', 'learned'"),
        ("study.zipped = {'GPT.d_model': [32, 64], 'GPT.n_heads': [2]}", "must be of one length"),
        ("study.grid = {'GPT.positional': []}", "non-empty list of values"),
        ("study.grid = {'train.seed': [1, 2]}", "seeds come from study.seeds"),
        ("study.grid = [1, 2]", "takes a dict from a binding name"),
        (GRID + "\nstudy.seeds = [1, 1]", "distinct seeds"),
        ("study.grid = {'GPT.positional': [@positional.ropey]}", "Did you mean 'rope'"),
    ],
)
def test_malformed_study_files_are_one_paragraph_errors(tmp_path, body, message):
    with pytest.raises(NimaError, match=message):
        load_study(study_file(tmp_path, body), [], for_command(None))


def test_dry_run_shows_the_plan_and_writes_nothing(tmp_path, capsys):
    path = study_file(tmp_path, GRID + "\nstudy.seeds = [1, 2]")
    out = tmp_path / "out"
    assert main(["ablate", str(path), "--study-dir", str(out), "--dry-run", "--jobs", "2"]) == 0
    text = capsys.readouterr().err
    assert "rope: GPT.positional = @positional.rope" in text
    assert "4 runs: 0 finished, 4 to run, 2 at a time" in text
    assert "--bind 'train.seed = 1'" in text
    assert not out.exists()


def test_report_of_a_missing_study_dir(tmp_path):
    with pytest.raises(RunDirError, match="does not exist; give the folder `nima ablate` wrote"):
        write_report(tmp_path / "nope")


# -- launchers ----------------------------------------------------------------------------------


def jobs_for(tmp_path):
    code = "import sys; print('hello from', sys.argv[1]); sys.exit(int(sys.argv[1]))"
    return [
        Job(f"job{c}", (sys.executable, "-c", code, str(c)), tmp_path / f"logs/{c}.log")
        for c in (0, 3)
    ]


@pytest.mark.parametrize("name", ["local", "submitit"])
def test_launcher_runs_every_job_and_reports_exit_codes(tmp_path, name):
    params = {}
    if name == "submitit":
        pytest.importorskip("submitit")
        params = {"cluster": "local", "poll_s": 0.1}
    launcher = for_command(None).registries["launcher"].get(name)(jobs=2, **params)
    jobs = jobs_for(tmp_path)
    ended = dict((job.name, code) for job, code in launcher.run(jobs, tmp_path / "launcher"))
    assert ended == {"job0": 0, "job3": 3}
    assert (tmp_path / "logs/3.log").read_text() == "hello from 3\n"


# -- nima ablate end to end ---------------------------------------------------------------------

# sdpa and reference attention with the same seeds (so `nima compare` sees them drift), and a
# variant that fails when its model is built (32 is not divisible by 3 heads).
E2E = """
study.zipped = {
    'GPT.attention': [@attention.sdpa(), @attention.reference(), @attention.sdpa()],
    'GPT.n_heads': [4, 4, 3],
}
study.seeds = [1, 2]
"""
E2E_BUDGET = "train.steps = 100\ntrain.eval_interval = 50\ntrain.log_interval = 10"
GOOD = ["sdpa,n_heads=4", "reference,n_heads=4"]


@pytest.mark.slow
def test_ablate_killed_resumed_failing_variant_report_and_compare(
    tmp_path, shakespeare_file, capsys
):
    path = study_file(tmp_path, E2E, E2E_BUDGET)
    out = tmp_path / "out"
    runs = out / "runs"
    # 1. killed (SIGKILL to the study and its runs) while the second run trains
    command = [sys.executable, "-m", "nima.cli", "ablate", str(path), "--study-dir", str(out)]
    killed = subprocess.Popen(command + ["--jobs", "1", "--no-progress"], start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    second = runs / "sdpa,n_heads=4" / "seed2"
    deadline = time.monotonic() + 120
    while not (second / "metrics.jsonl").is_file():
        assert killed.poll() is None and time.monotonic() < deadline, "the study ended early"
        time.sleep(0.02)
    os.killpg(killed.pid, signal.SIGKILL)
    killed.wait()
    run_pid = json.loads((second / ".nima-run").read_text())["pid"]
    while Path(f"/proc/{run_pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.02)  # SIGKILL lands asynchronously; the orphaned run is reaped by init
    first = runs / "sdpa,n_heads=4" / "seed1" / "summary.json"
    kept = first.read_bytes(), first.stat().st_mtime_ns
    assert not (second / "summary.json").exists()

    # 2. resumed: the finished run is kept, the partial one moved aside and run again, the
    # failing variant recorded while the others finish
    assert main(["ablate", str(path), "--study-dir", str(out), "--jobs", "2", "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "6 runs (3 variants x 2 seeds), 1 finished, 5 to run, 2 at a time" in err
    assert "FAILED sdpa,n_heads=3/seed1: exit " in err
    assert "divisible by n_heads=3" in (out / "logs" / "sdpa,n_heads=3" / "seed1.log").read_text()
    assert (first.read_bytes(), first.stat().st_mtime_ns) == kept
    assert (out / "aside" / "sdpa,n_heads=4" / "seed2.1" / "seed2" / "metrics.jsonl").is_file()
    for variant in GOOD:
        for seed in (1, 2):
            summary = json.loads((runs / variant / f"seed{seed}" / "summary.json").read_text())
            assert summary["steps"] == 100 and not summary["interrupted"]
            config = (runs / variant / f"seed{seed}" / "config.gin").read_text()
            assert (
                f"train.seed = {seed}" in config
                and f"attention.{variant.split(',')[0]}()" in config
            )
    assert "study." not in (out / "experiment.gin").read_text()
    assert "study.zipped" in (out / "study.gin").read_text()

    # 3. the results: both good variants with n = 2, paired against the baseline
    rows = {r["variant"]: r for r in csv.DictReader((out / "results.csv").open())}
    assert rows["sdpa,n_heads=4"]["baseline"] == "True" and rows["sdpa,n_heads=3"]["n"] == "0"
    reference = rows["reference,n_heads=4"]
    assert reference["n"] == "2" and reference["test"] == "paired" and reference["df"] == "1.0"
    t = float(reference["t"])
    assert float(reference["p_value"]) == pytest.approx(1 - 2 / math.pi * math.atan(abs(t)))
    markdown = (out / "results.md").read_text()
    assert "## Runs without a result" in markdown
    assert (
        "`sdpa,n_heads=3` seed 2: failed before training; logs/sdpa,n_heads=3/seed2.log" in markdown
    )
    assert sum("★ |" in line for line in markdown.splitlines()) == 1  # the best row
    for png in ("curves.png", "metric.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"

    # 4. `nima study report` writes the same table again from the run directories
    before = (out / "results.csv").read_text()
    (out / "results.csv").unlink()
    assert main(["study", "report", str(out)]) == 0
    assert (out / "results.csv").read_text() == before

    # 5. sdpa vs reference attention, same seed: when they part, against the seed noise
    capsys.readouterr()
    sdpa, ref = runs / GOOD[0] / "seed1", runs / GOOD[1] / "seed1"
    assert main(["compare", str(sdpa), str(ref)]) == 0
    text = capsys.readouterr().out
    assert f"seed noise from the study {out.resolve()}" in text
    assert "val_loss: 2 common steps" in text
    assert "inside the seed noise" in text and "outside" not in text
