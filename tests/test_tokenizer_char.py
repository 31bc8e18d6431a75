"""The char tokenizer and the behaviour every tokenizer shares (special tokens, batches, files)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import nima
from nima.errors import CheckpointError

TEXT = "To be, or not to be: that is the question.\nWhether 'tis nobler in the mind"


def char(**kwargs):
    tokenizer = nima.get("tokenizer", "char")(**kwargs)
    tokenizer.train(TEXT)
    return tokenizer


def test_special_tokens_take_the_first_ids():
    tok = char(special_tokens=["<sep>"])
    assert [tok.id_to_token(i) for i in range(5)] == ["<pad>", "<unk>", "<sos>", "<eos>", "<sep>"]
    assert (tok.pad_id, tok.unk_id, tok.sos_id, tok.eos_id) == (0, 1, 2, 3)
    assert tok.token_to_id("<sep>") == 4
    assert tok.vocab_size == 5 + len(set(TEXT))


def test_round_trip_and_ids_are_distinct_per_char():
    tok = char()
    ids = tok.encode(TEXT)
    assert len(ids) == len(TEXT)
    assert tok.decode(ids) == TEXT
    assert len(set(ids)) == len(set(TEXT))
    assert tok.encode("") == [] and tok.decode([]) == ""


def test_unseen_chars_become_unk():
    tok = char()
    ids = tok.encode("toZ")
    assert ids[2] == tok.unk_id
    assert tok.decode(ids) == "to<unk>"
    assert tok.decode(ids, skip_special_tokens=True) == "to"


def test_add_special_tokens_and_skip():
    tok = char()
    ids = tok.encode("to be", add_special_tokens=True)
    assert ids[0] == tok.sos_id and ids[-1] == tok.eos_id
    assert tok.decode(ids) == "<sos>to be<eos>"
    assert tok.decode(ids, skip_special_tokens=True) == "to be"


def test_literal_special_tokens_only_when_allowed():
    tok = char()
    text = "be<eos>to"
    plain = tok.encode(text)
    assert tok.eos_id not in plain  # "<", "e", "o", ... as characters (or <unk>)
    allowed = tok.encode(text, allowed_special={"<eos>"})
    assert allowed == tok.encode("be") + [tok.eos_id] + tok.encode("to")
    assert tok.encode(text, allowed_special="all") == allowed
    with pytest.raises(ValueError, match="<nope>"):
        tok.encode(text, allowed_special={"<nope>"})


def test_vocab_cap_keeps_most_frequent():
    tok = char(vocab_size=4 + 3)
    kept = {tok.id_to_token(i) for i in range(4, tok.vocab_size)}
    assert kept == {" ", "e", "t"}  # the three most frequent characters of TEXT
    assert tok.vocab_size == 7


def test_encode_batch_padding_truncation_mask():
    tok = char()
    texts = ["to be", "or", ""]
    out = tok.encode_batch(texts)
    assert [len(r) for r in out["input_ids"]] == [5, 5, 5]
    assert out["input_ids"][1] == tok.encode("or") + [tok.pad_id] * 3
    assert out["attention_mask"][1] == [1, 1, 0, 0, 0]
    left = tok.encode_batch(texts, padding_side="left")
    assert left["input_ids"][1] == [tok.pad_id] * 3 + tok.encode("or")
    assert left["attention_mask"][2] == [0] * 5
    cut = tok.encode_batch(texts, truncation=True, max_length=3, padding=False)
    assert cut["input_ids"] == [tok.encode("to "), tok.encode("or"), []]
    cut_left = tok.encode_batch(texts, truncation=True, max_length=3, truncation_side="left")
    assert cut_left["input_ids"][0] == tok.encode(" be")
    short_left = tok.encode_batch(
        ["or"], truncation=True, max_length=3, truncation_side="left", padding=False
    )
    assert short_left["input_ids"] == [tok.encode("or")]  # shorter than max_length: kept whole
    pt = tok.encode_batch(texts, add_special_tokens=True, return_tensors="pt", max_length=8)
    assert pt["input_ids"].shape == (3, 8) and pt["input_ids"].dtype == torch.long
    assert pt["attention_mask"].sum(1).tolist() == [7, 4, 2]
    npy = tok.encode_batch(texts, return_tensors="np")
    assert isinstance(npy["input_ids"], np.ndarray) and npy["input_ids"].shape == (3, 5)
    with pytest.raises(ValueError, match="padding"):
        tok.encode_batch(texts, padding=False, return_tensors="pt")


def test_unset_roles_are_none_and_what_needs_them_says_so():
    tok = char()
    assert tok.roles == {"pad": "<pad>", "unk": "<unk>", "sos": "<sos>", "eos": "<eos>"}
    tok.set_role("pad", None)
    tok.set_role("sos", None)
    assert tok.pad_id is None and tok.sos_id is None
    with pytest.raises(ValueError, match="add_special_tokens=True.* needs a sos token"):
        tok.encode("to", add_special_tokens=True)
    with pytest.raises(ValueError, match="needs a pad token.*set_role\\('pad', token\\)"):
        tok.encode_batch(["to", "be or"])
    assert tok.encode_batch(["to", "b"], pad_id=tok.eos_id)["input_ids"][1][-1] == tok.eos_id
    with pytest.raises(ValueError, match="unknown role 'bos'"):
        tok.set_role("bos", "<sos>")


def test_untrained_tokenizer_says_so():
    tok = nima.get("tokenizer", "char")()
    with pytest.raises(RuntimeError, match="train"):
        tok.encode("x")


def test_bad_ids_are_rejected():
    tok = char()
    with pytest.raises(ValueError, match="outside"):
        tok.decode([tok.vocab_size])


def test_save_load_round_trip(tmp_path):
    tok = char(special_tokens=["<sep>"], vocab_size=30)
    path = tmp_path / "tok.json"
    tok.save(path)
    back = type(tok).load(path)
    assert back.get_vocab() == tok.get_vocab()
    assert back.special_tokens == tok.special_tokens
    assert back.max_vocab_size == 30
    assert back.encode(TEXT) == tok.encode(TEXT)
    assert back.fingerprint() == tok.fingerprint()
    assert json.loads(path.read_text())["version"] == 2
    assert not list(tmp_path.glob(".*"))  # no temporary file left behind


def test_load_errors_name_the_file_and_problem(tmp_path):
    tok = char()
    good = tmp_path / "good.json"
    tok.save(good)
    text = good.read_text()
    cls = type(tok)

    truncated = tmp_path / "truncated.json"
    truncated.write_text(text[: len(text) // 2])
    with pytest.raises(CheckpointError, match=r"truncated.json.*truncated or not JSON"):
        cls.load(truncated)

    with pytest.raises(CheckpointError, match="does not exist"):
        cls.load(tmp_path / "missing.json")

    other = tmp_path / "other.json"
    other.write_text(json.dumps({"model": {"type": "BPE"}}))
    with pytest.raises(CheckpointError, match="other.json is not a NIMA tokenizer file"):
        cls.load(other)

    data = json.loads(text)
    wrong_version = tmp_path / "v99.json"
    wrong_version.write_text(json.dumps({**data, "version": 99}))
    with pytest.raises(CheckpointError, match="v99.json has format version 99"):
        cls.load(wrong_version)

    wrong_kind = tmp_path / "kind.json"
    wrong_kind.write_text(json.dumps({**data, "kind": "bpe"}))
    with pytest.raises(CheckpointError, match="kind.json holds a 'bpe' tokenizer"):
        cls.load(wrong_kind)

    for name, broken in {
        "novocab.json": {k: v for k, v in data.items() if k != "vocab"},
        "badvocab.json": {**data, "vocab": data["vocab"][4:]},
        "badconfig.json": {**data, "config": {"bogus": 1}},
    }.items():
        path = tmp_path / name
        path.write_text(json.dumps(broken))
        with pytest.raises(CheckpointError, match=f"{name} is corrupt"):
            cls.load(path)


def test_load_tokenizer_picks_the_kind(tmp_path):
    from nima.data.tokens import load_tokenizer

    tok = char()
    tok.save(tmp_path / "t.json")
    back = load_tokenizer(tmp_path / "t.json")
    assert type(back) is type(tok) and back.encode(TEXT) == tok.encode(TEXT)
