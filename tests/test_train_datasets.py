"""Both datasets train end to end with each tokenizer (a tiny model, a few steps, in-process)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from nima.hooks import reset
from nima.train.run import run_experiment

SMOKE = Path(__file__).resolve().parents[1] / "experiments" / "smoke.gin"
TOKENIZERS = {
    "char": [],
    "word": ["word.vocab_size = 500"],
    "bpe": ["bpe.vocab_size = 300"],
}


@pytest.mark.parametrize("tokenizer", sorted(TOKENIZERS))
@pytest.mark.parametrize("dataset", ["shakespeare", "techqa"])
def test_dataset_trains_with_tokenizer(dataset, tokenizer, tmp_path, request) -> None:
    if dataset == "shakespeare":
        request.getfixturevalue("shakespeare_file")  # skips, naming NIMA_DATA_DIR, when unset
    bindings = [
        f"train.dataset = @dataset.{dataset}()",
        f"train.tokenizer = @tokenizer.{tokenizer}()",
        "train.steps = 8",
        "train.eval_interval = 4",
        "train.final_eval = 'full'",
        *TOKENIZERS[tokenizer],
    ]
    summary = run_experiment([SMOKE], bindings, reset(), run_dir=tmp_path / "run",
                             show_progress=False)  # fmt: skip
    assert summary["steps"] == 8
    assert math.isfinite(summary["final_val_loss"])
    assert 0 < summary["val_bits_per_char"] < 10
    assert summary["sample"].strip()
    if tokenizer != "word":  # "KING" is no word of techqa: <unk>, skipped in the printed sample
        assert summary["sample"].startswith("KING")
    assert (tmp_path / "run" / "tokenizer.json").is_file()
