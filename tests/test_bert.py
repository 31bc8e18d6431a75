"""BERT: bidirectional attention, key padding, the classification head, no KV cache, and
experiments/bert.gin end to end (masked-LM loss and accuracy on val, then `nima fill`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import nima
from nima.cli import main
from nima.errors import ConfigError
from nima.hooks import reset
from nima.train.run import run_experiment

BERT_GIN = Path(__file__).resolve().parents[1] / "experiments" / "bert.gin"
TINY = [
    "BERT.context_length = 32",
    "BERT.d_model = 32",
    "BERT.n_layers = 2",
    "BERT.n_heads = 4",
    "train.steps = 12",
    "train.batch_size = 8",
    "train.eval_interval = 6",
    "train.eval_batches = 2",
    "train.final_eval = 'batches'",
    "train.log_interval = 3",
    "cosine.warmup_steps = 2",
    "adamw.lr = 1e-2",
    "train.sample_prompt = 'To be, or not to <mask>e'",
]


def bert(positional: str = "rope", **options) -> torch.nn.Module:
    torch.manual_seed(0)
    return nima.get("model", "bert")(
        vocab_size=23, context_length=16, d_model=32, n_layers=2, n_heads=4,
        attention=nima.get("attention", "sdpa")(), positional=nima.get("positional", positional),
        **options,
    ).eval()  # fmt: skip


@pytest.mark.parametrize("positional", ["rope", "learned", "alibi", "none"])
def test_every_position_sees_the_future(positional: str) -> None:
    model = bert(positional)
    idx = torch.randint(23, (2, 9))
    changed = idx.clone()
    changed[:, -1] = (idx[:, -1] + 1) % 23
    before, after = model(idx), model(changed)
    assert before.shape == (2, 9, 23)
    assert not torch.allclose(before[:, 0], after[:, 0])  # the first position saw the last


def test_padding_is_invisible_to_the_real_tokens() -> None:
    model = bert()
    idx = torch.randint(23, (2, 9))
    mask = torch.ones(2, 9, dtype=torch.bool)
    mask[0, 6:] = False  # the first sequence has 6 real tokens
    other = idx.clone()
    other[0, 6:] = (idx[0, 6:] + 5) % 23  # different padding
    a = model(idx, key_padding_mask=mask)
    b = model(other, key_padding_mask=mask)
    torch.testing.assert_close(a[0, :6], b[0, :6], rtol=0, atol=1e-6)
    torch.testing.assert_close(a[0, :6], model(idx[:1, :6])[0], rtol=0, atol=1e-5)


def test_the_classification_head_pools_the_real_tokens() -> None:
    model = bert(n_classes=3)
    idx = torch.randint(23, (2, 9))
    mask = torch.ones(2, 9, dtype=torch.bool)
    mask[1, 4:] = False
    logits = model.classify(idx, key_padding_mask=mask)
    assert logits.shape == (2, 3)
    torch.testing.assert_close(logits[1], model.classify(idx[1:, :4])[0], rtol=0, atol=1e-5)
    logits.sum().backward()
    assert model.classifier.weight.grad is not None
    with pytest.raises(ConfigError, match="n_classes"):
        bert().classify(idx)


def test_a_bidirectional_encoder_has_no_kv_cache() -> None:
    with pytest.raises(ConfigError, match="bidirectional"):
        bert().new_cache(1)
    with pytest.raises(ConfigError, match="no KV cache"):
        bert()(torch.zeros(1, 3, dtype=torch.long), cache=object())


def test_bert_gin_trains_reports_masked_accuracy_and_fills_masks(tmp_path, capsys) -> None:
    run_dir = tmp_path / "bert"
    summary = run_experiment([BERT_GIN], TINY, reset(), run_dir=run_dir, show_progress=False)
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").open()]
    evals = [r for r in records if "val_loss" in r]
    assert [r["step"] for r in evals] == [6, 12]
    assert all(0 <= r["val_accuracy"] <= 1 for r in evals)
    assert summary["final_val_loss"] < 3.6  # ln(vocab 67) = 4.20: it learned something
    assert 0 < summary["final_val_accuracy"] <= 1
    assert "<mask>" not in summary["sample"] and "To be, or not to" in summary["sample"]
    assert "bits_per_char" not in json.dumps(summary)  # masked-LM scores 15% of the tokens

    capsys.readouterr()
    assert main(["fill", str(run_dir), "--text", "To be, or not to <mask>", "--top", "3"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("To be, or not to ")
    assert out[1].startswith("mask 1: ") and out[1].count("'") == 6  # three quoted tokens
    assert main(["fill", str(run_dir), "--text", "no mask here"]) == 2
    assert "has no <mask>" in capsys.readouterr().err


@pytest.mark.parametrize("family", ["gpt", "seq2seq"])
def test_fill_refuses_a_model_that_is_not_bidirectional(family: str) -> None:
    """A GPT whose tokenizer has a mask token would otherwise print meaningless predictions."""
    from nima.fill import predict_masks

    tokenizer = nima.get("tokenizer", "char")(special_tokens=["<mask>"])
    tokenizer.train("To be, or not to be")

    def model(family: str) -> torch.nn.Module:
        return nima.get("model", family)(
            vocab_size=tokenizer.vocab_size, context_length=32, d_model=16, n_layers=1,
            n_heads=2, attention=nima.get("attention", "sdpa")(),
            positional=nima.get("positional", "learned"),
        )  # fmt: skip

    with pytest.raises(ConfigError, match=r"bidirectional.*experiments/bert.gin"):
        predict_masks(model(family), tokenizer, "To be, or not to <mask>")
    assert len(predict_masks(model("bert"), tokenizer, "To be, or not to <mask>")) == 1
