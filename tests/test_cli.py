"""`nima` end to end in subprocesses: the smoke experiment, its run directory, and every error path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nima.runs.records import read_metrics

ROOT = Path(__file__).resolve().parents[1]
SMOKE = str(ROOT / "experiments" / "smoke.gin")


def nima(*args: str, env: dict | None = None, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "nima.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=cwd,
        timeout=600,
    )


def assert_clean_error(result: subprocess.CompletedProcess, *needles: str) -> None:
    """Non-zero exit, one `error:` paragraph on stderr naming `needles`, no traceback."""
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: ") or "\nerror: " in result.stderr, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    for needle in needles:
        assert needle in result.stderr, result.stderr


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    if not os.environ.get("NIMA_DATA_DIR"):
        pytest.skip("set NIMA_DATA_DIR to the folder holding tinyshakespeare.txt to run this test")
    run_dir = tmp_path_factory.mktemp("runs") / "smoke"
    result = nima("run", SMOKE, "--run-dir", str(run_dir), "--no-progress")
    assert result.returncode == 0, result.stderr
    return run_dir, result


def test_smoke_run_fills_its_run_directory(smoke_run) -> None:
    run_dir, result = smoke_run
    for name in (
        "config.gin",
        "metrics.jsonl",
        "run.json",
        "summary.json",
        "tokenizer.json",
        "checkpoints/best.safetensors",
        "checkpoints/last.safetensors",
    ):
        assert (run_dir / name).is_file(), name
    records = read_metrics(run_dir)
    train = [r["train_loss"] for r in records if "train_loss" in r]
    assert all("step" in r for r in records)
    assert {"lr", "tokens_per_s"} <= set(next(r for r in records if "train_loss" in r))
    assert any("val_loss" in r for r in records)
    assert train[-1] < train[0] - 0.3, train  # the loss went down
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["sample"].startswith("KING")
    assert "best val loss" in result.stdout and summary["sample"] in result.stdout
    run = json.loads((run_dir / "run.json").read_text())
    assert run["seed"] == 1337 and run["torch"] and "data" in run
    assert run["plugin_packages"]["nima"]  # the version of each plugin distribution used


def test_config_gin_reproduces_the_run(smoke_run, tmp_path: Path) -> None:
    run_dir, _ = smoke_run
    again = tmp_path / "again"
    result = nima("run", str(run_dir / "config.gin"), "--run-dir", str(again), "--no-progress")
    assert result.returncode == 0, result.stderr
    losses = [
        [r.get("train_loss") for r in read_metrics(d)] for d in (run_dir, again)
    ]
    assert losses[0] == losses[1]


def test_generate_from_a_run(smoke_run) -> None:
    run_dir, _ = smoke_run
    args = ("generate", str(run_dir), "--prompt", "KING", "--max-new-tokens", "20")
    greedy = [nima(*args, "--greedy") for _ in range(2)]
    assert greedy[0].returncode == 0, greedy[0].stderr
    assert greedy[0].stdout.startswith("KING") and greedy[0].stdout == greedy[1].stdout
    sampled = nima(*args, "--temperature", "0.8", "--top-k", "10", "--top-p", "0.9")
    assert sampled.returncode == 0 and sampled.stdout.startswith("KING"), sampled.stderr


def test_plot_writes_a_png(smoke_run, tmp_path: Path) -> None:
    run_dir, _ = smoke_run
    out = tmp_path / "curves.png"
    result = nima("plot", str(run_dir), str(run_dir), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert_clean_error(nima("plot", str(tmp_path)), "no metrics.jsonl")


def test_refuses_a_run_dir_that_holds_a_run(smoke_run) -> None:
    run_dir, _ = smoke_run
    before = (run_dir / "metrics.jsonl").read_bytes()
    result = nima("run", SMOKE, "--run-dir", str(run_dir), "--no-progress")
    assert_clean_error(result, str(run_dir), "already holds another run")
    assert (run_dir / "metrics.jsonl").read_bytes() == before


def test_missing_gin_file() -> None:
    assert_clean_error(nima("run", "experiments/nope.gin"), "nope.gin", "does not exist")


def test_gin_syntax_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.gin"
    bad.write_text(f"include '{SMOKE}'\nGPT.n_layers = = 2\nGPT.d_model = 3\n")
    assert_clean_error(nima("run", str(bad)), f"{bad}:2", "syntax")


def test_misspelt_plugin() -> None:
    result = nima("run", SMOKE, "--bind", "GPT.attention = @attention.sdpx()")
    assert_clean_error(result, "attention", "'sdpx'", "Did you mean 'sdpa'", "reference")


def test_bind_of_unknown_parameter() -> None:
    assert_clean_error(nima("run", SMOKE, "--bind", "GPT.n_layer = 2"), "n_layer", "n_layers")


def test_bad_parameter_value(shakespeare_file) -> None:
    result = nima("run", SMOKE, "--bind", "GPT.n_heads = 7")
    assert_clean_error(result, "d_model=32", "n_heads=7")


def test_generate_refuses_bad_sampler_values_and_empty_prompts(smoke_run) -> None:
    run_dir, _ = smoke_run
    assert_clean_error(nima("generate", str(run_dir), "--top-k", "0"), "--top-k: 0 is not an int >= 1")
    assert_clean_error(nima("generate", str(run_dir), "--top-p", "1.5"), "--top-p: 1.5 is not a number > 0 and <= 1")
    assert_clean_error(nima("generate", str(run_dir), "--prompt", ""), "no tokens")


def test_smoke_trains_with_the_triton_kernels_on_the_interpreter(shakespeare_file, tmp_path):
    """Issue 3's command: attention.triton and rope_triton train on CPU under TRITON_INTERPRET=1."""
    run_dir = tmp_path / "triton"
    result = nima(
        "run", SMOKE, "--run-dir", str(run_dir), "--no-progress",
        "--bind", "GPT.attention = @attention.triton()",
        "--bind", "GPT.positional = @positional.rope_triton",
        "--bind", "train.steps = 3", "--bind", "train.eval_batches = 1",
        "--bind", "train.sample_tokens = 4",
        env={"TRITON_INTERPRET": "1"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    config = (run_dir / "config.gin").read_text()
    assert "@attention.triton()" in config and "@positional.rope_triton" in config
    losses = [r["train_loss"] for r in read_metrics(run_dir) if "train_loss" in r]
    assert losses and all(0 < loss < 10 for loss in losses)


def test_empty_sample_prompt_is_refused_before_training(shakespeare_file, tmp_path) -> None:
    result = nima(
        "run", SMOKE, "--run-dir", str(tmp_path / "r"), "--bind", "train.sample_prompt = ''"
    )
    assert_clean_error(result, "no tokens")
    assert not (tmp_path / "r").exists()


def test_debug_shows_the_traceback() -> None:
    result = nima("run", "experiments/nope.gin", "--debug")
    assert result.returncode != 0 and "Traceback" in result.stderr


@pytest.mark.parametrize(
    "binding,needles",
    [
        (
            "GPT.attention = @attention.triton()",
            ("attention plugin 'triton'", "device=cpu", "sdpa", "TRITON_INTERPRET=1"),
        ),
        (
            "GPT.positional = @positional.rope_triton",
            ("'rope_triton'", "device=cpu", "rope", "TRITON_INTERPRET=1"),
        ),
    ],
)
def test_plugin_lacking_a_capability(
    shakespeare_file, tmp_path: Path, binding: str, needles
) -> None:
    """Without TRITON_INTERPRET the Triton kernels cannot run on CPU tensors: refuse up front."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    args = ["run", SMOKE, "--device", "cpu", "--run-dir", str(tmp_path / "r"), "--bind", binding]
    result = subprocess.run(
        [sys.executable, "-m", "nima.cli", *args],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=600,
    )  # fmt: skip
    assert_clean_error(result, *needles)
    assert not (tmp_path / "r").exists()  # nothing written


def test_data_file_failing_its_checksum(tmp_path: Path) -> None:
    (tmp_path / "tinyshakespeare.txt").write_text("not the real file\n")
    result = nima(
        "run", SMOKE, "--run-dir", str(tmp_path / "r"), env={"NIMA_DATA_DIR": str(tmp_path)}
    )
    assert_clean_error(result, "tinyshakespeare.txt", "checksum", "86c4e6aa")


def test_no_data_and_no_network(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """In-process, with the download made to fail: no partial file, and NIMA_DATA_DIR explained."""
    import urllib.request

    from nima import cli

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.delenv("NIMA_DATA_DIR", raising=False)
    monkeypatch.setenv("NIMA_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(urllib.request, "urlopen", offline)
    code = cli.main(["run", SMOKE, "--run-dir", str(tmp_path / "r"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "NIMA_DATA_DIR" in err and "no network" in err
    assert not any((tmp_path / "cache").rglob("*.txt*")), "a partial download was left behind"


THIRD_PARTY = '''
from nima import hookimpl


class Echo:
    """Returns v: a third-party attention."""

    def __call__(self, q, k, v, *, causal, scale=None, key_padding_mask=None):
        return v


@hookimpl
def nima_register(registry):
    registry.attention("echo_listing", Echo)
'''


def test_plugins_listing(tmp_path: Path) -> None:
    """As in a user's environment: another plugin package is installed beside the built-ins."""
    (tmp_path / "echo_listing.py").write_text(THIRD_PARTY)
    info = tmp_path / "echo_listing-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: echo-listing\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[nima]\necho_listing = echo_listing\n")
    path = os.pathsep.join(p for p in (str(tmp_path), os.environ.get("PYTHONPATH")) if p)
    env = {"PYTHONPATH": path}

    result = nima("plugins", "--json", env=env)
    assert result.returncode == 0, result.stderr
    entries = json.loads(result.stdout)
    assert {"family", "name", "package", "description", "capabilities"} <= set(entries[0])
    names = {(e["family"], e["name"], e["package"]) for e in entries}
    built_in = {
        ("attention", "sdpa", "nima"),
        ("positional", "rope", "nima"),
        ("model", "gpt", "nima"),
    }
    assert built_in | {("attention", "echo_listing", "echo-listing")} <= names
    table = nima("plugins", "--family", "sampler", env=env)
    assert table.returncode == 0 and "top_p" in table.stdout
    disabled = json.loads(nima("plugins", "--json", "--disable-plugins", "nima", env=env).stdout)
    packages = {e["package"] for e in disabled}
    assert "nima" not in packages and "echo-listing" in packages  # others' plugins stay listed
