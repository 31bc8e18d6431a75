"""Byte-level BPE: round trips, special tokens, files, and parity with Hugging Face `tokenizers`."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import nima
from nima.errors import CheckpointError
from nima.testing.tokenizers import train_hf_bytelevel_bpe

tokenizers = pytest.importorskip("tokenizers")

SPECIALS = ["<pad>", "<unk>", "<sos>", "<eos>"]
SMALL_TEXT = (
    "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n"
    "You are all resolved rather to die than to famish? Don't we've 123 4567 ½ café naïve\n"
) * 3
HARD_STRINGS = [
    "",
    " ",
    "   ",
    "\n\n\n",
    "\t \t\r\n",
    "  leading and trailing  ",
    "👨‍👩‍👧‍👦 family, 🇫🇷 flag, 👍🏽 thumbs",
    "日本語のテキストと中文",
    "e\u0301 a\u0308 Z\u0351\u036b\u0343\u036a",
    "مرحبا بالعالم שלום עולם",
    "\x00\x01\x1c\x1d\x1f\x7f control",
    "zero\u200bwidth \ufeffbom \xa0nbsp \u2028line \u3000ideo",
    "don't I'll we've they'RE 'S",
    "numbers 12345 ½ ² ٣ 〇",
    "x" * 300,
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𠀀 astral",
]


def train_both(text: str, vocab_size: int):
    """A NIMA bpe and a Hugging Face byte-level BPE trained on the same text and settings."""
    hf = train_hf_bytelevel_bpe(text, vocab_size, SPECIALS)
    ours = nima.get("tokenizer", "bpe")(vocab_size=vocab_size)
    ours.train(text)
    return ours, hf


@pytest.fixture(scope="module")
def small_pair():
    return train_both(SMALL_TEXT, 400)


def test_vocab_layout_and_no_unk(small_pair):
    tok, hf = small_pair
    assert [tok.id_to_token(i) for i in range(4)] == SPECIALS
    # The small text runs out of pairs before the cap: both stop at the same size.
    assert 4 + 256 < tok.vocab_size == hf.get_vocab_size() <= 400
    assert len(set(tok.get_vocab().values())) == tok.vocab_size
    ids = tok.encode("ÿ\x00 never seen ⚡")
    assert tok.unk_id not in ids


def test_training_is_deterministic():
    a = nima.get("tokenizer", "bpe")(vocab_size=330)
    a.train(SMALL_TEXT)
    b = nima.get("tokenizer", "bpe")(vocab_size=330)
    b.train(SMALL_TEXT)
    assert a.merges == b.merges and a.fingerprint() == b.fingerprint()
    assert a.vocab_size == 330


def test_same_merges_and_ids_as_hugging_face(small_pair):
    tok, hf = small_pair
    hf_json = json.loads(hf.to_str())
    assert [tuple(m) for m in hf_json["model"]["merges"]] == tok.merges
    assert hf.get_vocab() == tok.get_vocab()
    for s in [SMALL_TEXT, *HARD_STRINGS]:
        assert tok.encode(s) == hf.encode(s).ids, s


def test_round_trip_hard_strings(small_pair):
    tok, _ = small_pair
    for s in HARD_STRINGS:
        assert tok.decode(tok.encode(s)) == s


def test_lone_surrogate_is_a_clear_error(small_pair):
    tok, _ = small_pair
    with pytest.raises(ValueError, match="lone surrogate U\\+D800"):
        tok.encode("ok \ud800 no")


def test_special_tokens_literal_only_when_allowed(small_pair):
    tok, hf = small_pair
    text = "Speak<eos>speak <sos>"
    plain = tok.encode(text)
    assert tok.eos_id not in plain and tok.sos_id not in plain
    assert tok.decode(plain) == text
    allowed = tok.encode(text, allowed_special="all")
    # Never merged across: exactly the pieces around the special tokens.
    expected = tok.encode("Speak") + [tok.eos_id] + tok.encode("speak ") + [tok.sos_id]
    assert allowed == expected
    assert allowed == hf.encode(text).ids  # HF always recognises added tokens
    assert tok.decode(allowed) == text
    assert tok.decode(allowed, skip_special_tokens=True) == "Speakspeak "


def test_decode_broken_utf8_like_hugging_face(small_pair):
    tok, hf = small_pair
    ids = tok.encode("日本")
    byte_ids = [tok.token_to_id(c) for c in "".join(tok.id_to_token(i) for i in ids)]
    for cut in range(1, len(byte_ids)):
        part = byte_ids[:cut]
        assert tok.decode(part) == hf.decode(part, skip_special_tokens=False)
        assert ("\ufffd" in tok.decode(part)) == (cut % 3 != 0)  # 3 bytes per character


def test_nima_file_round_trip(small_pair, tmp_path):
    tok, _ = small_pair
    tok.save(tmp_path / "bpe.json")
    back = nima.get("tokenizer", "bpe").load(tmp_path / "bpe.json")
    assert back.merges == tok.merges and back.get_vocab() == tok.get_vocab()
    for s in HARD_STRINGS:
        assert back.encode(s) == tok.encode(s)


def test_hugging_face_file_both_ways(small_pair, tmp_path):
    from tokenizers import Tokenizer

    tok, hf = small_pair
    hf.save(str(tmp_path / "hf.json"))
    loaded = nima.get("tokenizer", "bpe").load(tmp_path / "hf.json")
    tok.save_huggingface(tmp_path / "ours.json")
    hf_loaded = Tokenizer.from_file(str(tmp_path / "ours.json"))
    for s in [SMALL_TEXT, *HARD_STRINGS]:
        ids = hf.encode(s).ids
        assert loaded.encode(s) == ids
        assert hf_loaded.encode(s).ids == ids
        assert loaded.decode(ids) == hf.decode(ids) == s


def test_custom_pattern_through_hugging_face(tmp_path):
    from tokenizers import Tokenizer

    tok = nima.get("tokenizer", "bpe")(vocab_size=300, pattern=r"\p{L}+|\p{N}|[^\p{L}\p{N}]")
    tok.train(SMALL_TEXT)
    tok.save_huggingface(tmp_path / "split.json")
    hf = Tokenizer.from_file(str(tmp_path / "split.json"))
    back = nima.get("tokenizer", "bpe").load(tmp_path / "split.json")
    for s in [SMALL_TEXT, *HARD_STRINGS]:
        assert tok.encode(s) == hf.encode(s).ids == back.encode(s)


def test_unsupported_hugging_face_files(tmp_path):
    from tokenizers import Tokenizer, models

    wordpiece = Tokenizer(models.WordPiece({"[UNK]": 0, "a": 1}, unk_token="[UNK]"))
    wordpiece.save(str(tmp_path / "wp.json"))
    with pytest.raises(CheckpointError, match="wp.json cannot be used.*not 'BPE'"):
        nima.get("tokenizer", "bpe").load(tmp_path / "wp.json")
    gpt2_like, _ = train_both(SMALL_TEXT, 300)
    data = gpt2_like.to_huggingface()
    data["added_tokens"] = [{**data["added_tokens"][0], "content": "<|endoftext|>"}]
    (tmp_path / "other_specials.json").write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match="special tokens are \\['<\\|endoftext\\|>'\\]"):
        nima.get("tokenizer", "bpe").load(tmp_path / "other_specials.json")


def test_tiny_shakespeare_parity_with_hugging_face(shakespeare_file):
    text = shakespeare_file.read_text(encoding="utf-8")
    train, val = text[:1_003_854], text[1_003_854:]
    tok, hf = train_both(train, 1024)
    assert [tuple(m) for m in json.loads(hf.to_str())["model"]["merges"]] == tok.merges
    ids = tok.encode(val)
    assert ids == hf.encode(val).ids
    assert tok.decode(ids) == val


# Hypothesis: every string without lone surrogates round-trips, and encodes as HF does.
any_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=60)
PROPERTY = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@PROPERTY
@given(s=any_text)
def test_property_round_trip(small_pair, s):
    tok, _ = small_pair
    assert tok.decode(tok.encode(s)) == s


@PROPERTY
@given(s=any_text)
def test_property_matches_hugging_face(small_pair, s):
    tok, hf = small_pair
    assert tok.encode(s) == hf.encode(s).ids


@PROPERTY
@given(ids=st.lists(st.integers(4, 358), max_size=30))
def test_property_decode_matches_hugging_face(small_pair, ids):
    tok, hf = small_pair
    assert tok.decode(ids) == hf.decode(ids, skip_special_tokens=False)
