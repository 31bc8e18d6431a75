"""Datasets, splits and the token cache behind prepare_tokens."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

import nima
from nima.data.splits import split_samples, split_text
from nima.data.tokens import cache_entries, prepare_tokens, read_cache
from nima.errors import ConfigError, DataError


class TinyText:
    """A dataset made here, so the cache tests need no data file."""

    def __init__(self, text: str = "hello world, hello tokens\n" * 20) -> None:
        self.text = text

    def splits(self) -> dict[str, str]:
        return split_text(self.text, (0.8, 0.1, 0.1))

    def checksum(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()


def test_shakespeare_char_split_sizes(shakespeare_file):
    text = shakespeare_file.read_text(encoding="utf-8")
    splits = nima.get("dataset", "shakespeare_char")().splits()
    assert len(splits["train"]) == 1_003_854 and len(splits["val"]) == 111_540
    assert splits["train"] + splits["val"] == text  # in order, nothing lost
    assert text.startswith(splits["train"][:100]) and text.endswith(splits["val"][-100:])


def test_prepare_tokens_on_shakespeare_char(shakespeare_file, tmp_path):
    prepared = prepare_tokens(
        nima.get("dataset", "shakespeare_char")(), nima.get("tokenizer", "char")(), root=tmp_path
    )
    train, val = prepared.splits["train"], prepared.splits["val"]
    assert np.issubdtype(train.dtype, np.integer)
    assert (train.size, val.size) == (1_003_854, 111_540)
    assert prepared.tokenizer.vocab_size == 65 + 4  # nanoGPT's 65 characters + 4 special tokens
    text = shakespeare_file.read_text(encoding="utf-8")
    assert prepared.tokenizer.decode(val[:200].tolist()) == text[1_003_854 : 1_003_854 + 200]
    assert prepared.metadata["splits"]["val"]["chars"] == 111_540
    assert prepared.metadata["tokenizer"]["vocab_size"] == 69


def test_split_text_in_order_and_fractions():
    text = "".join(chr(65 + i % 26) for i in range(1000))
    parts = split_text(text, (0.8, 0.1, 0.1))
    assert [len(parts[k]) for k in ("train", "val", "test")] == [800, 100, 100]
    assert parts["train"] + parts["val"] + parts["test"] == text
    assert set(split_text(text, (0.9, 0.1))) == {"train", "val"}
    for bad in [(0.5, 0.2), (1.2, -0.2), (0.0, 1.0), (1.0,)]:
        with pytest.raises(ConfigError, match="fractions"):
            split_text(text, bad)


def test_split_samples_deterministic_and_disjoint():
    samples = list(range(100))
    a = split_samples(samples, (0.7, 0.2, 0.1), seed=3)
    assert a == split_samples(samples, (0.7, 0.2, 0.1), seed=3)
    assert a != split_samples(samples, (0.7, 0.2, 0.1), seed=4)
    assert sorted(a["train"] + a["val"] + a["test"]) == samples
    assert [len(a[k]) for k in ("train", "val", "test")] == [70, 20, 10]


def test_prepare_tokens_trains_on_train_split_only(tmp_path):
    ds = TinyText("abc" * 100 + "xyz" * 25)  # 80% is exactly the "abc" part
    prepared = prepare_tokens(ds, nima.get("tokenizer", "char")(), root=tmp_path)
    tok = prepared.tokenizer
    assert tok.vocab_size == 4 + 3
    assert set(prepared.splits["test"].tolist()) == {tok.unk_id}


def test_cache_hit_reuses_and_changes_invalidate(tmp_path):
    ds = TinyText()
    first = prepare_tokens(ds, nima.get("tokenizer", "char")(), root=tmp_path)
    assert isinstance(first.splits["train"], np.memmap)
    again = prepare_tokens(ds, nima.get("tokenizer", "char")(), root=tmp_path)
    assert again.cache_path == first.cache_path
    for name in ("train", "val", "test"):
        np.testing.assert_array_equal(again.splits[name], first.splits[name])
    other_text = prepare_tokens(
        TinyText("other text\n" * 30), nima.get("tokenizer", "char")(), root=tmp_path
    )
    other_tok = prepare_tokens(ds, nima.get("tokenizer", "char")(vocab_size=8), root=tmp_path)
    assert len({first.cache_path, other_text.cache_path, other_tok.cache_path}) == 3
    assert len(cache_entries(tmp_path)) == 3


def test_half_written_cache_is_never_read(tmp_path, monkeypatch):
    ds = TinyText()
    tok_cls = type(nima.get("tokenizer", "char")())

    def killed(self, path):  # the writer dies after the arrays, before the tokenizer
        raise KeyboardInterrupt

    monkeypatch.setattr(tok_cls, "save", killed)
    with pytest.raises(KeyboardInterrupt):
        prepare_tokens(ds, tok_cls(), root=tmp_path)
    assert list(tmp_path.iterdir()) == [] and cache_entries(tmp_path) == []
    monkeypatch.undo()
    prepared = prepare_tokens(ds, tok_cls(), root=tmp_path)
    path = prepared.cache_path
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary left behind
    # A truncated array file is rejected, and the broken entry is rebuilt in its place.
    data = (path / "train.npy").read_bytes()
    (path / "train.npy").write_bytes(data[: len(data) // 2])
    assert read_cache(path, tok_cls) is None
    rebuilt = prepare_tokens(ds, tok_cls(), root=tmp_path)
    assert rebuilt.cache_path == path and read_cache(path, tok_cls) is not None


def test_dataset_without_train_split_is_a_clear_error(tmp_path):
    class NoTrain(TinyText):
        def splits(self):
            return {"val": "x"}

    with pytest.raises(DataError, match="'train' split"):
        prepare_tokens(NoTrain(), nima.get("tokenizer", "char")(), root=tmp_path)


def test_bits_per_char_matches_definition(tmp_path):
    prepared = prepare_tokens(TinyText(), nima.get("tokenizer", "char")(), cache=False)
    # One token per character: bits per char is the loss in bits.
    assert prepared.bits_per_char(np.log(2) * 1.5, "val") == pytest.approx(1.5)


def test_text_file_and_folder(tmp_path):
    (tmp_path / "b.txt").write_text("second file\n" * 10, encoding="utf-8")
    (tmp_path / "a.txt").write_text("first file\n" * 10, encoding="utf-8")
    folder = nima.get("dataset", "text_file")(path=str(tmp_path), fractions=(0.5, 0.5))
    splits = folder.splits()
    assert splits["train"].startswith("first file") and splits["val"].endswith("second file\n")
    single = nima.get("dataset", "text_file")(path=str(tmp_path / "a.txt"))
    assert single.splits()["train"].startswith("first")
    before = folder.checksum()
    (tmp_path / "b.txt").write_text("changed\n", encoding="utf-8")
    assert folder.checksum() != before
    (tmp_path / "bad.txt").write_bytes(b"\xff\xfe bad")
    with pytest.raises(DataError, match="bad.txt is not valid UTF-8"):
        folder.splits()
    with pytest.raises(DataError, match="does not exist"):
        nima.get("dataset", "text_file")(path=str(tmp_path / "nope")).splits()


def test_techqa_offline_deterministic_and_separate():
    a, b = nima.get("dataset", "techqa")(), nima.get("dataset", "techqa")()
    samples = a.samples()
    total = sum(len(s) for s in samples.values())
    assert total >= 300
    assert samples == b.samples() and a.checksum() == b.checksum()
    assert set(samples) == {"train", "val", "test"}
    questions = [s["question"] for split in samples.values() for s in split]
    assert len(set(questions)) == total  # disjoint splits, no duplicate question
    for sample in samples["val"]:
        assert sample["question"].endswith("?") and len(sample["answer"]) >= 20
        assert "Answer:" not in sample["question"]
    assert "What does `json.dumps` do?" in questions
    assert nima.get("dataset", "techqa")(seed=1).samples()["val"] != samples["val"]
    text = a.splits()["val"]
    assert text.count("Question: ") == len(samples["val"])


def test_techqa_with_bpe_and_word_round_trips(tmp_path):
    ds = nima.get("dataset", "techqa")()
    texts = ds.splits()
    bpe = prepare_tokens(ds, nima.get("tokenizer", "bpe")(vocab_size=600), root=tmp_path)
    for name, text in texts.items():
        assert bpe.tokenizer.decode(bpe.splits[name].tolist()) == text
    assert bpe.metadata["splits"]["train"]["tokens"] < len(texts["train"]) / 2
    word = prepare_tokens(ds, nima.get("tokenizer", "word")(), root=tmp_path)
    assert word.tokenizer.decode(word.splits["train"].tolist()) == texts["train"]


def test_data_cli_prepare_and_info(tmp_path, capsys, monkeypatch):
    import argparse

    from nima.data.cli import add_data_arguments

    monkeypatch.setenv("NIMA_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "corpus.txt").write_text("to be or not to be\n" * 50, encoding="utf-8")
    gin_file = tmp_path / "exp.gin"
    gin_file.write_text(
        f"train.dataset = @dataset.text_file()\ntext_file.path = '{tmp_path / 'corpus.txt'}'\n"
        "train.tokenizer = @tokenizer.bpe()\nbpe.vocab_size = 300\n"
    )
    parser = argparse.ArgumentParser()
    add_data_arguments(parser.add_subparsers(dest="command", required=True))

    def run(*argv: str) -> str:
        args = parser.parse_args(argv)
        assert args.func(args) == 0
        return capsys.readouterr().out

    assert "no token caches" in run("data", "info")
    out = run("data", "prepare", str(gin_file))
    entries = json.loads(run("data", "info", "--json"))
    vocab = entries[0]["tokenizer"]["vocab_size"]
    assert len(entries) == 1 and 260 < vocab <= 300  # the tiny corpus runs out of pairs
    assert f"text_file + bpe tokenizer (vocab {vocab})" in out and "train" in out
    assert entries[0]["splits"]["train"]["chars"] == int(0.9 * 19 * 50)
