"""`nima generate` and `nima chat` on a tiny trained run: prompts from files, JSONL out, streaming,
every sampler and strategy option, gin `generation` settings, and their errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import nima
from nima.cli import main
from nima.hooks import reset

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "experiments" / "smoke.gin"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    if not os.environ.get("NIMA_DATA_DIR"):
        pytest.skip("set NIMA_DATA_DIR to the folder holding tinyshakespeare.txt")
    from nima.train.run import run_experiment

    run_dir = tmp_path_factory.mktemp("runs") / "tiny"
    bindings = ["train.steps = 4", "train.eval_interval = 2", "train.sample_tokens = 5"]
    run_experiment([SMOKE], bindings, reset(), run_dir=run_dir, show_progress=False)
    return run_dir


def generate(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["generate", *map(str, args)])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_prompts_file_to_jsonl_equals_prompts_one_by_one(run_dir, tmp_path, capsys) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("KING\nQUEEN:\n\nFirst Citizen\n")  # blank lines are skipped
    out = tmp_path / "out.jsonl"
    code, _, err = generate(capsys, run_dir, "--prompts", prompts, "--out", out, "--greedy",
                            "--max-new-tokens", "12", "--batch-size", "2")  # fmt: skip
    assert code == 0 and "wrote 3 completions" in err
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["prompt"] for r in records] == ["KING", "QUEEN:", "First Citizen"]
    for r in records:
        assert set(r) == {"prompt", "text", "ids", "finish_reason"} and len(r["ids"]) <= 12
        _, alone, _ = generate(capsys, run_dir, "--prompt", r["prompt"], "--greedy",
                               "--max-new-tokens", "12")  # fmt: skip
        assert alone == r["prompt"] + r["text"] + "\n"


def test_jsonl_prompts_stream_and_every_sampler(run_dir, tmp_path, capsys) -> None:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "KING"}\n{"prompt": "ROMEO:"}\n')
    options = ["--temperature", "0.9", "--top-k", "20", "--top-p", "0.95", "--min-p", "0.01",
               "--typical", "0.99", "--repetition-penalty", "1.1", "--frequency-penalty", "0.2",
               "--presence-penalty", "0.1", "--no-repeat-ngram", "4", "--seed", "3",
               "--max-new-tokens", "15"]  # fmt: skip
    code, batch, _ = generate(capsys, run_dir, "--prompts", prompts, *options)
    assert code == 0
    out = tmp_path / "streamed.jsonl"
    code, streamed, _ = generate(capsys, run_dir, "--prompt", "KING", "--stream", "--out", out,
                                 *options)  # fmt: skip
    assert code == 0 and streamed == batch.splitlines(keepends=True)[0]  # row 0 has seed 3
    [record] = [json.loads(line) for line in out.read_text().splitlines()]
    assert "KING" + record["text"] + "\n" == streamed and record["finish_reason"] == "length"


def test_a_prompts_sample_does_not_depend_on_batch_size_or_stream(run_dir, tmp_path, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("KING\nQUEEN:\nROMEO:\nFirst Citizen\n")
    seen = []
    for how in (["--batch-size", "1"], ["--batch-size", "2"], ["--batch-size", "4"], ["--stream"]):
        out = tmp_path / "out.jsonl"
        code, _, _ = generate(capsys, run_dir, "--prompts", prompts, "--out", out, "--seed", "7",
                              "--temperature", "1.5", "--max-new-tokens", "8", *how)  # fmt: skip
        assert code == 0
        seen.append([json.loads(line)["ids"] for line in out.read_text().splitlines()])
    assert seen[0] == seen[1] == seen[2] == seen[3]
    assert len({tuple(ids) for ids in seen[0]}) > 1  # rows differ: each has its own seed


def test_beam_with_n_best_and_stop_strings(run_dir, tmp_path, capsys) -> None:
    out = tmp_path / "beam.jsonl"
    code, _, _ = generate(capsys, run_dir, "--prompt", "KING", "--strategy", "beam", "--num-beams",
                          "3", "--num-return", "2", "--max-new-tokens", "8", "--out", out)  # fmt: skip
    [record] = [json.loads(line) for line in out.read_text().splitlines()]
    assert (
        code == 0 and len(record["n_best"]) == 2 and record["text"] == record["n_best"][0]["text"]
    )
    stop = record["text"][2:4]
    code, text, _ = generate(capsys, run_dir, "--prompt", "KING", "--strategy", "beam",
                             "--max-new-tokens", "8", "--stop", stop)  # fmt: skip
    assert code == 0 and stop not in text[4:]


def test_gin_generation_settings(run_dir, tmp_path, capsys) -> None:
    gin_file = tmp_path / "gen.gin"
    gin_file.write_text(
        "generation.samplers = [@sampler.greedy()]\ngeneration.max_new_tokens = 9\n"
    )
    code, from_gin, _ = generate(capsys, run_dir, "--prompt", "KING", "--config", gin_file)
    _, flags, _ = generate(capsys, run_dir, "--prompt", "KING", "--greedy", "--max-new-tokens", "9")
    assert code == 0 and from_gin == flags
    code, _, err = generate(capsys, run_dir, "--prompt", "KING", "--config", gin_file, "--bind",
                            "generation.strategy = @strategy.beam(num_beams=0)")  # fmt: skip
    assert code == 2 and "num_beams" in err


@pytest.mark.parametrize(
    "content,suffix,says",
    [
        ('{"prompt": 3}\n', ".jsonl", 'must be an object with a "prompt" string'),
        ("not json\n", ".jsonl", ":1: not JSON"),
        ("\n\n", ".txt", "holds no prompt"),
    ],  # fmt: skip
)
def test_bad_prompt_files_are_refused(run_dir, tmp_path, capsys, content, suffix, says) -> None:
    path = tmp_path / f"p{suffix}"
    path.write_text(content)
    out = tmp_path / "out.jsonl"
    code, _, err = generate(capsys, run_dir, "--prompts", path, "--out", out)
    assert code == 2 and says in err and not out.exists()


def test_option_errors_name_what_is_wrong(run_dir, capsys) -> None:
    code, _, err = generate(capsys, run_dir, "--num-beams", "3")
    assert code == 2 and "add --strategy beam" in err
    code, _, err = generate(capsys, run_dir, "--prompt", "KING", "--length-penalty", "2",
                            "--early-stopping")  # fmt: skip
    assert code == 2 and "--length-penalty, --early-stopping: beam options" in err
    code, _, err = generate(capsys, run_dir, "--prompt", "KING", "--lookahead", "3")
    assert code == 2 and "--lookahead is a speculative option" in err
    code, _, err = generate(capsys, run_dir, "--prompt", "KING", "--stop", "")
    assert code == 2 and "stop must be a list of non-empty strings" in err
    code, _, err = generate(capsys, run_dir, "--strategy", "bean")
    assert code == 2 and "Did you mean 'beam'" in err
    code, _, err = generate(capsys, run_dir, "--prompt", "a", "--prompts", run_dir / "config.gin")
    assert code == 2 and "not both" in err


def test_python_load(run_dir) -> None:
    m = nima.load(run_dir)
    out = m.generate(["KING", "QUEEN"], max_new_tokens=6, samplers={"greedy": True})
    assert [len(c.ids) for c in out] == [6, 6] and all(c.text for c in out)
    assert "".join(m.stream("KING", 6, samplers={"greedy": True})) == out[0].text


def test_chat_in_a_subprocess(run_dir) -> None:
    script = "KING\n/set temperature 0.5\n/set top_k zero\n/show\nQUEEN\n/reset\n/quit\n"
    result = subprocess.run(
        [sys.executable, "-m", "nima.cli", "chat", str(run_dir), "--max-new-tokens", "8"],
        input=script, capture_output=True, text=True, timeout=300, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "temperature = 0.5" in out and "not set: top_k takes an integer" in out
    assert "samplers: temperature=0.5; strategy: sample" in out and "(conversation cleared)" in out


def test_speculative_from_the_command_line(run_dir, capsys) -> None:
    args = ("--prompt", "KING", "--greedy", "--max-new-tokens", "10")
    _, plain, _ = generate(capsys, run_dir, *args)
    code, spec, err = generate(capsys, run_dir, *args, "--strategy", "speculative", "--draft",
                               run_dir, "--lookahead", "3")  # fmt: skip
    assert code == 0 and spec == plain, err
    code, _, err = generate(capsys, run_dir, *args, "--draft", run_dir)
    assert code == 2 and "--strategy speculative and --draft RUN_DIR go together" in err


def test_chat_answers_with_gins_samplers_and_strategy(run_dir, tmp_path) -> None:
    gin_file = tmp_path / "gen.gin"
    gin_file.write_text("generation.samplers = [@sampler.greedy()]\n"
                        "generation.strategy = @strategy.beam()\n")  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-m", "nima.cli", "chat", str(run_dir), "--config", str(gin_file),
         "--max-new-tokens", "4"],
        input="/show\n/set top_k 5\n/show\n/quit\n", capture_output=True, text=True,
        timeout=300, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    shown = [line for line in result.stdout.splitlines() if "samplers" in line]
    assert "samplers: Greedy(); strategy: Beam(num_beams=4" in shown[0]
    assert "samplers: top_k=5; strategy: Beam(num_beams=4" in shown[1]


def test_ctrl_c_writes_nothing(run_dir, tmp_path, capsys, monkeypatch) -> None:
    from nima.generate.api import LanguageModel

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(LanguageModel, "generate", interrupted)
    out = tmp_path / "out.jsonl"
    code, _, err = generate(capsys, run_dir, "--prompt", "KING", "--out", out)
    assert code == 130 and "interrupted" in err and not out.exists()
