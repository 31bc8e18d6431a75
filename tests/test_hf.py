"""Hugging Face GPT-2 interop: a NIMA run exported loads in transformers with the same logits,
a GPT-2 directory saved by transformers imports as a NIMA run with the same logits (generate
and fine-tune it), and what GPT-2 cannot represent is refused by name. Nothing downloads: the
GPT-2 models are small random ones built here."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest
import torch

import nima
from nima.cli import main
from nima.hooks import reset
from nima.interop.hf import NotGPT2Error, gpt2_config, gpt2_state, import_hf
from nima.runs import load_run
from nima.train.run import run_experiment

transformers = pytest.importorskip("transformers")
ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "experiments" / "smoke.gin"
GPT2_LIKE = [
    "GPT.positional = @positional.learned",
    "GPT.norm = @norm.layernorm",
    "GPT.mlp = @mlp.gelu",
    "train.dataset = @dataset.techqa()",
    "train.tokenizer = @tokenizer.bpe()",
    "bpe.vocab_size = 300",
    "train.steps = 3",
    "train.eval_interval = 3",
    "train.sample_tokens = 2",
    "train.sample_prompt = 'What'",
]


def gpt(**options) -> torch.nn.Module:
    torch.manual_seed(0)
    parts = dict(
        attention=nima.get("attention", "sdpa")(),
        positional=nima.get("positional", "learned"),
        norm=nima.get("norm", "layernorm"),
        mlp=nima.get("mlp", "gelu"),
    )
    parts.update(options)
    return nima.get("model", "gpt")(vocab_size=50, context_length=16, d_model=32, n_layers=2,
                                    n_heads=4, **parts).eval()  # fmt: skip


def hf_logits(hf_model, idx: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return hf_model(idx).logits


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("approximate", ["none", "tanh"])
@pytest.mark.parametrize("tied", [True, False])
def test_the_weights_map_onto_gpt2_exactly(bias: bool, approximate: str, tied: bool) -> None:
    """bias = False goes out as zero biases: the same function."""
    model = gpt(bias=bias, tie_embeddings=tied,
                mlp=functools.partial(nima.get("mlp", "gelu"), approximate=approximate))  # fmt: skip
    with torch.no_grad():  # biases and gains away from their init, so a mix-up shows
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    config = gpt2_config(model, nima.hooks.system().registries)
    assert config["dtype"] == config["torch_dtype"] == "float32"  # transformers 5 and < 4.56
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(**config)).eval()
    missing, unexpected = hf.load_state_dict(gpt2_state(model), strict=False)
    assert not unexpected and set(missing) <= ({"lm_head.weight"} if tied else set())
    if tied:
        hf.tie_weights()
    idx = torch.randint(50, (3, 13))
    torch.testing.assert_close(hf_logits(hf, idx), model(idx), rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"positional": "rope"}, "positional.rope"),
        ({"positional": "alibi"}, "positional.alibi"),
        ({"norm": "rmsnorm"}, "norm.rmsnorm"),
        ({"mlp": "swiglu"}, "mlp.swiglu"),
        ({"n_kv_heads": 2}, "n_kv_heads=2"),
    ],
)
def test_what_gpt2_cannot_represent_is_refused_by_name(options: dict, named: str) -> None:
    family = {"positional", "norm", "mlp"} & set(options)
    built = {f: nima.get(f, options[f]) for f in family}
    model = gpt(**built, **{k: v for k, v in options.items() if k not in family})
    with pytest.raises(NotGPT2Error, match=named.replace(".", r"\.")):
        gpt2_config(model, nima.hooks.system().registries)


def test_bert_is_not_a_gpt2() -> None:
    bert = nima.get("model", "bert")(vocab_size=50, context_length=16, d_model=32, n_layers=1,
                                      n_heads=4, attention=nima.get("attention", "sdpa")(),
                                      positional=nima.get("positional", "learned"))  # fmt: skip
    with pytest.raises(NotGPT2Error, match="BERT"):
        gpt2_config(bert, nima.hooks.system().registries)


def test_a_run_exports_to_transformers_with_the_same_logits_and_tokens(tmp_path) -> None:
    run_dir = tmp_path / "run"
    run_experiment([SMOKE], [*GPT2_LIKE, "GPT.bias = True"], reset(), run_dir=run_dir,
                   show_progress=False)  # fmt: skip
    out = tmp_path / "hf"
    assert main(["export", str(run_dir), "--format", "hf", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"
    ]  # fmt: skip
    hf = transformers.GPT2LMHeadModel.from_pretrained(out).eval()
    run = load_run(run_dir, reset(), torch.device("cpu"))
    text = "What does `json.dumps` do?"
    ids = run.tokenizer.encode(text)
    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(out)
    assert hf_tokenizer(text)["input_ids"] == ids
    idx = torch.tensor([ids])
    torch.testing.assert_close(hf_logits(hf, idx), run.model(idx), rtol=0, atol=1e-5)
    # a second export into the same folder is refused, the first left as it was
    assert main(["export", str(run_dir), "--format", "hf", str(out)]) == 2
    # and back: the exported directory imports as a run with the same logits and tokens
    back = tmp_path / "back"
    import_hf(out, back, reset())
    again = load_run(back, reset(), torch.device("cpu"))
    assert again.tokenizer.encode(text) == ids
    torch.testing.assert_close(again.model(idx), run.model(idx), rtol=0, atol=1e-5)


def test_a_run_that_is_not_gpt2_is_refused_and_nothing_is_written(tmp_path, capsys) -> None:
    run_dir = tmp_path / "run"
    run_experiment([SMOKE], ["train.steps = 2", "train.eval_interval = 2",
                             "train.sample_tokens = 2"], reset(), run_dir=run_dir,
                   show_progress=False)  # fmt: skip
    capsys.readouterr()
    assert main(["export", str(run_dir), "--format", "hf", str(tmp_path / "hf")]) == 2
    assert "positional.rope" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


@pytest.fixture
def gpt2_dir(tmp_path) -> Path:
    """A small random GPT-2 saved by transformers, with a byte-level BPE tokenizer.json."""
    from nima_data.techqa import TechQA

    tokenizer = nima.get("tokenizer", "bpe")(vocab_size=300)
    tokenizer.train(TechQA().splits()["train"])
    config = transformers.GPT2Config(
        vocab_size=tokenizer.vocab_size,
        n_positions=32,
        n_embd=32,
        n_layer=2,
        n_head=4,
        bos_token_id=tokenizer.sos_id,
        eos_token_id=tokenizer.eos_id,
    )  # fmt: skip  (activation_function: GPT-2's gelu_new)
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(config)
    with torch.no_grad():  # biases and gains away from their init, so a mix-up shows
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    path = tmp_path / "gpt2"
    model.save_pretrained(path)
    tokenizer.save_huggingface(path / "tokenizer.json")
    return path


def test_a_gpt2_directory_imports_with_the_same_logits_and_generates(gpt2_dir, tmp_path) -> None:
    run_dir = tmp_path / "imported"
    assert main(["import", str(gpt2_dir), "--run-dir", str(run_dir)]) == 0
    run = load_run(run_dir, reset(), torch.device("cpu"))
    hf = transformers.GPT2LMHeadModel.from_pretrained(gpt2_dir).eval()
    idx = torch.randint(run.tokenizer.vocab_size, (2, 29))
    torch.testing.assert_close(run.model(idx), hf_logits(hf, idx), rtol=0, atol=1e-5)
    assert main(["generate", str(run_dir), "--prompt", "What", "--max-new-tokens", "5"]) == 0


def test_an_imported_gpt2_fine_tunes_from_its_weights(gpt2_dir, tmp_path) -> None:
    run_dir = tmp_path / "imported"
    import_hf(gpt2_dir, run_dir, reset())
    tuned = tmp_path / "tuned"
    bindings = ["train.dataset = @dataset.techqa()", "train.steps = 2", "train.eval_interval = 2",
                "train.eval_batches = 1", "train.sample_tokens = 2"]  # fmt: skip
    summary = run_experiment([run_dir / "config.gin", ROOT / "experiments" / "finetune.gin"],
                             bindings, reset(), run_dir=tuned, show_progress=False)  # fmt: skip
    assert summary["steps"] == 2
    before = load_run(run_dir, reset(), torch.device("cpu")).model.state_dict()
    after = load_run(tuned, reset(), torch.device("cpu")).model.state_dict()
    moved = max((after[k] - before[k]).abs().max().item() for k in before)
    assert 0 < moved < 1e-3  # two Adam steps at lr 1e-4 from the imported weights, not a new init


def test_bad_import_directories_are_refused(gpt2_dir, tmp_path, capsys) -> None:
    config = json.loads((gpt2_dir / "config.json").read_text())
    (gpt2_dir / "config.json").write_text(json.dumps({**config, "model_type": "llama"}))
    assert main(["import", str(gpt2_dir), "--run-dir", str(tmp_path / "a")]) == 2
    assert "'llama'" in capsys.readouterr().err
    (gpt2_dir / "config.json").write_text(json.dumps({**config, "activation_function": "relu"}))
    assert main(["import", str(gpt2_dir), "--run-dir", str(tmp_path / "a")]) == 2
    assert "relu" in capsys.readouterr().err
    (gpt2_dir / "config.json").write_text(json.dumps(config))
    (gpt2_dir / "tokenizer.json").rename(gpt2_dir / "vocab.json")
    assert main(["import", str(gpt2_dir), "--run-dir", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert "no tokenizer.json (it has vocab.json)" in err and "save_pretrained" in err
    (gpt2_dir / "model.safetensors").unlink()
    assert main(["import", str(gpt2_dir), "--run-dir", str(tmp_path / "a")]) == 2
    assert "model.safetensors" in capsys.readouterr().err
    assert main(["import", str(tmp_path / "nowhere"), "--run-dir", str(tmp_path / "a")]) == 2
    assert not (tmp_path / "a").exists()
