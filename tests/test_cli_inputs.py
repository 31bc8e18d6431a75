"""Command-line inputs: numeric options, devices, --version, a closed pipe."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import nima
from nima.cli import main

SMOKE = Path(__file__).resolve().parent.parent / "experiments" / "smoke.gin"


@pytest.mark.parametrize(
    ("option", "value", "says"),
    [
        ("--max-new-tokens", "-1", "-1 is not an int >= 1"),
        ("--max-new-tokens", "ten", "'ten' is not an int >= 1"),
        ("--temperature", "0", "0 is not a number > 0"),
        ("--temperature", "nan", "nan is not a number > 0"),
        ("--temperature", "inf", "inf is not a number > 0"),
        ("--top-k", "0", "0 is not an int >= 1"),
        ("--top-p", "1.5", "1.5 is not a number > 0 and <= 1"),
        ("--top-p", "nan", "nan is not a number > 0 and <= 1"),
        ("--seed", "-3", "-3 is not an int >= 0"),
    ],
)
def test_generate_refuses_bad_numbers(tmp_path: Path, capsys, option: str, value: str, says: str):
    with pytest.raises(SystemExit) as exit_info:
        main(["generate", str(tmp_path), option, value])
    assert exit_info.value.code == 2
    assert f"argument {option}: {says}" in capsys.readouterr().err


def test_every_numeric_option_of_other_commands_is_checked(tmp_path: Path, capsys) -> None:
    for argv, says in (
        (["compare", str(tmp_path), str(tmp_path), "--rows", "-3"], "--rows: -3 is not an int >= 1"),
        (["ablate", str(SMOKE), "--jobs", "0"], "--jobs: 0 is not an int >= 1"),
        (["run", str(SMOKE), "--nproc", "0"], "--nproc: 0 is not an int >= 1"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2 and says in capsys.readouterr().err


def test_version(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert nima.__version__ in capsys.readouterr().out


@pytest.mark.parametrize("device", ["gpu", "cuda:x", "tpu"])
def test_unknown_device_is_one_error_line(tmp_path: Path, capsys, device: str) -> None:
    code = main(["run", str(SMOKE), "--device", device, "--run-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: --device") and device in err and "cpu" in err
    assert "Traceback" not in err and not (tmp_path / "run").exists()


def test_a_closed_pipe_is_not_a_traceback() -> None:
    """`nima plugins --json | head -1`: the reader leaves early; nima exits quietly."""
    shell = f"{sys.executable} -m nima.cli plugins --json | head -1"
    out = subprocess.run(["bash", "-o", "pipefail", "-c", shell], capture_output=True, text=True)
    assert out.stdout.strip() == "["
    assert "Traceback" not in out.stderr and "BrokenPipeError" not in out.stderr
