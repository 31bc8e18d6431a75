"""nima.runs: claiming run directories under concurrency, one-file checkpoints, loading a run."""

from __future__ import annotations

import json
import multiprocessing
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import nima
from nima.errors import CheckpointError, ConfigError, DataError, RunDirError
from nima.hooks import reset
from nima.runs import checkpoint as checkpoint_module
from nima.runs import (
    claim,
    claim_default,
    load_checkpoint,
    load_run,
    pick_device,
    read_checkpoint,
    rundir,
)
from nima.runs.environment import available_devices
from nima.runs.rundir import CLAIM_FILE
from nima.train.run import run_experiment

SMOKE = Path(__file__).resolve().parents[1] / "experiments" / "smoke.gin"
TINY = [  # offline data, a few steps: a complete run in seconds
    "train.dataset = @dataset.techqa()",
    "train.steps = 6",
    "train.eval_interval = 3",
    "train.sample_prompt = 'The'",
    "train.sample_tokens = 5",
]


def _claim_in_child(barrier, queue, target: str, default: bool) -> None:
    barrier.wait()  # every process claims at the same moment
    try:
        got = claim_default("exp.gin", root=target) if default else claim(target)
        queue.put(str(got))
    except RunDirError:
        queue.put(None)


def _claim_at_once(n: int, target: Path, default: bool) -> list[str | None]:
    ctx = multiprocessing.get_context("fork")  # children inherit the fixed timestamp
    barrier, queue = ctx.Barrier(n), ctx.Queue()
    procs = [
        ctx.Process(target=_claim_in_child, args=(barrier, queue, str(target), default))
        for _ in range(n)
    ]
    for p in procs:
        p.start()
    results = [queue.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    return results


def test_default_names_stay_unique_when_8_runs_start_at_once(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(rundir, "_timestamp", lambda: "20260101-000000")  # one second
    got = _claim_at_once(8, tmp_path / "runs", default=True)
    assert None not in got and len(set(got)) == 8
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == sorted(
        ["exp-20260101-000000"] + [f"exp-20260101-000000-{n}" for n in range(2, 9)]
    )
    for run_dir in map(Path, got):
        assert (run_dir / CLAIM_FILE).is_file()


@pytest.mark.parametrize("exists", [False, True], ids=["absent", "empty"])
def test_one_of_many_claims_of_the_same_dir_wins(tmp_path, exists) -> None:
    target = tmp_path / "run"
    if exists:
        target.mkdir()  # an empty folder may be given as --run-dir
    got = _claim_at_once(8, target, default=False)
    assert got.count(str(target)) == 1 and got.count(None) == 7


def test_a_claimed_or_used_dir_is_refused_and_left_as_it_was(tmp_path) -> None:
    run_dir = claim(tmp_path / "run")
    with pytest.raises(RunDirError, match="already holds another run"):
        claim(run_dir)
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(RunDirError, match="already holds other files"):
        claim(other)
    assert [p.name for p in other.iterdir()] == ["notes.txt"]  # no claim file left behind
    (tmp_path / "file").write_text("")
    with pytest.raises(RunDirError, match="a file of that name"):
        claim(tmp_path / "file")


def _tiny_model(**dims) -> torch.nn.Module:
    options = dict(context_length=8, d_model=16, n_layers=1, n_heads=2) | dims
    parts = dict(
        attention=nima.get("attention", "sdpa")(), positional=nima.get("positional", "rope")
    )
    return nima.get("model", "gpt")(vocab_size=11, **options, **parts)


def test_a_checkpoint_is_one_file_with_its_metadata_in_the_header(tmp_path) -> None:
    model = _tiny_model()
    path = tmp_path / "checkpoints" / "best.safetensors"
    checkpoint_module.save_checkpoint(model, path, {"step": 7, "val_loss": 1.5})
    assert [p.name for p in path.parent.iterdir()] == ["best.safetensors"]
    assert read_checkpoint(path) == {"step": 7, "val_loss": 1.5}
    other = _tiny_model()
    assert load_checkpoint(other, path)["step"] == 7
    for (name, a), b in zip(model.state_dict().items(), other.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_a_failed_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch) -> None:
    model = _tiny_model()
    path = tmp_path / "last.safetensors"
    checkpoint_module.save_checkpoint(model, path, {"step": 1})
    before = path.read_bytes()

    def dies_half_way(state, filename, metadata):
        Path(filename).write_bytes(b"half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint_module, "save_file", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        checkpoint_module.save_checkpoint(model, path, {"step": 2})
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == [path.name]


def test_a_checkpoint_of_other_shapes_names_tensor_shapes_and_config(tmp_path) -> None:
    path = tmp_path / "run" / "checkpoints" / "best.safetensors"
    checkpoint_module.save_checkpoint(_tiny_model(d_model=32), path, {"step": 1})
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(_tiny_model(d_model=16), path)
    message = str(err.value)
    name = next(iter(_tiny_model().state_dict()))  # the first tensor that differs, by name
    assert f"tensor {name!r} has shape [11, 32] in the checkpoint but [11, 16]" in message
    assert str(tmp_path / "run" / "config.gin") in message


def test_a_checkpoint_with_other_tensors_names_them(tmp_path) -> None:
    path = tmp_path / "run" / "checkpoints" / "best.safetensors"
    checkpoint_module.save_checkpoint(_tiny_model(n_layers=2), path, {"step": 1})
    with pytest.raises(CheckpointError, match=r"blocks\.1\.|layers\.1\.|\.1\.") as err:
        load_checkpoint(_tiny_model(n_layers=1), path)
    assert "not in the model" in str(err.value) and "config.gin" in str(err.value)
    with pytest.raises(CheckpointError, match="are not in it"):
        load_checkpoint(_tiny_model(n_layers=3), path)


def test_truncated_and_foreign_files_are_checkpoint_errors(tmp_path) -> None:
    path = tmp_path / "best.safetensors"
    checkpoint_module.save_checkpoint(_tiny_model(), path, {"step": 1})
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        read_checkpoint(path)
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(path))
    with pytest.raises(CheckpointError, match="without NIMA's metadata"):
        read_checkpoint(path)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> tuple[Path, dict]:
    run_dir = tmp_path_factory.mktemp("runs") / "tiny"
    summary = run_experiment([SMOKE], TINY, reset(), run_dir=run_dir, show_progress=False)
    return run_dir, summary


def test_a_run_directory_holds_one_file_per_checkpoint_and_strict_json(tiny_run) -> None:
    run_dir, summary = tiny_run
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == [
        "best.safetensors",
        "last.safetensors",
    ]
    for name in ("run.json", "summary.json"):
        json.loads((run_dir / name).read_text(), parse_constant=pytest.fail)
    assert read_checkpoint(run_dir / "checkpoints" / "last.safetensors")["step"] == 6


def test_load_run_rebuilds_the_model_with_its_best_checkpoint(tiny_run) -> None:
    run_dir, summary = tiny_run
    run = load_run(run_dir, reset(), torch.device("cpu"))
    assert run.checkpoint["step"] == summary["best_step"] and not run.model.training
    assert run.tokenizer.vocab_size == run.checkpoint["vocab_size"]
    assert load_run(run_dir, reset(), torch.device("cpu"), "last").checkpoint["step"] == 6


def test_load_run_says_what_is_wrong_with_the_directory(tiny_run, tmp_path) -> None:
    with pytest.raises(RunDirError, match="does not exist"):
        load_run(tmp_path / "nope", reset(), torch.device("cpu"))
    with pytest.raises(RunDirError, match="config.gin is missing"):
        load_run(tmp_path, reset(), torch.device("cpu"))
    run_dir, _ = tiny_run
    with pytest.raises(RunDirError, match="no 'middle' checkpoint.*'best', 'last'"):
        load_run(run_dir, reset(), torch.device("cpu"), "middle")


def test_readers_of_a_run_import_nothing_of_the_trainer() -> None:
    code = (
        "import sys, nima.generate.from_run, nima.data.cli; "
        "print([m for m in sys.modules if m.startswith('nima.train.')])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['nima.train.settings']"  # the `train` gin configurable only


@pytest.mark.parametrize(
    "name", ["gpu", "tpu", "meta", "xla", "mps", "cuda", f"cuda:{torch.cuda.device_count()}"]
)
def test_pick_device_refuses_what_torch_or_this_machine_lacks(name: str) -> None:
    if name in available_devices():
        pytest.skip(f"this machine has {name}")
    with pytest.raises(ConfigError, match=rf"--device '{name}' is not .*; this machine has: cpu"):
        pick_device(name)


def test_pick_device_takes_what_this_machine_has() -> None:
    for name in available_devices():
        assert pick_device(name) == torch.device(name)
    assert pick_device("cpu:0") == torch.device("cpu:0")


def test_a_config_that_fails_before_training_claims_no_run_dir(tmp_path) -> None:
    corpus = tmp_path / "tiny.txt"
    corpus.write_text("to be\n" * 20)  # its val split is shorter than a window
    bindings = ["train.dataset = @dataset.text_file()", f"text_file.path = '{corpus}'"]
    with pytest.raises(DataError, match="too short"):
        run_experiment([SMOKE], bindings, reset(), run_dir=tmp_path / "run", show_progress=False)
    assert not (tmp_path / "run").exists()  # so the same --run-dir can be used once it is fixed
