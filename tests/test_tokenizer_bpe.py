"""Byte-level BPE: round trips, special tokens, files, and parity with Hugging Face `tokenizers`."""

from __future__ import annotations

import json
import random
import time

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
    assert loaded.special_tokens == tuple(SPECIALS)  # specials at 0-3: NIMA's roles, as trained
    assert (loaded.pad_id, loaded.unk_id, loaded.sos_id, loaded.eos_id) == (0, 1, 2, 3)
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
    data = train_both(SMALL_TEXT, 300)[0].to_huggingface()
    for name, added, match in [
        ("plain.json", {"special": False}, "added token '<eos>' \\(id 3\\) is not special"),
        ("lstrip.json", {"lstrip": True}, "special token '<eos>' sets lstrip"),
    ]:
        bad = {
            **data,
            "added_tokens": [*data["added_tokens"][:3], {**data["added_tokens"][3], **added}],
        }
        (tmp_path / name).write_text(json.dumps(bad))
        with pytest.raises(CheckpointError, match=f"{name} cannot be used.*{match}"):
            nima.get("tokenizer", "bpe").load(tmp_path / name)


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
    assert tok.encode(s, allowed_special="all") == hf.encode(s).ids  # HF always splits them out


@PROPERTY
@given(ids=st.lists(st.integers(4, 358), max_size=30))
def test_property_decode_matches_hugging_face(small_pair, ids):
    tok, hf = small_pair
    assert tok.decode(ids) == hf.decode(ids, skip_special_tokens=False)


# ----- a GPT-2-like file: byte-level BPE, <|endoftext|> the one special token, at the last id ----

EOT = "<|endoftext|>"


@pytest.fixture(scope="module")
def gpt2_like(tmp_path_factory):
    """(NIMA's load of a tokenizer.json that `tokenizers` wrote, that HF tokenizer, the file)."""
    hf = train_hf_bytelevel_bpe(SMALL_TEXT, 400, special_tokens=(), added_after=[EOT])
    path = tmp_path_factory.mktemp("gpt2_like") / "tokenizer.json"
    hf.save(str(path))
    return nima.get("tokenizer", "bpe").load(path), hf, path


def test_gpt2_like_file_loads_with_its_special_token_where_it_is(gpt2_like):
    tok, hf, _ = gpt2_like
    assert tok.vocab_size == hf.get_vocab_size() and tok.get_vocab() == hf.get_vocab()
    assert tok.special_tokens == (EOT,) and tok.token_to_id(EOT) == tok.vocab_size - 1
    assert tok.roles == {"pad": None, "unk": None, "sos": EOT, "eos": EOT}
    assert (tok.pad_id, tok.unk_id) == (None, None)
    assert tok.sos_id == tok.eos_id == tok.vocab_size - 1
    text = f"Speak{EOT}speak, {EOT}"
    ids = tok.encode(text, allowed_special="all")
    assert ids == hf.encode(text).ids and ids.count(tok.eos_id) == 2
    assert tok.encode(text).count(tok.eos_id) == 0  # not allowed: ordinary text
    assert tok.decode(ids) == text
    assert tok.decode(ids, skip_special_tokens=True) == hf.decode(ids) == "Speakspeak, "
    assert tok.encode("hi", add_special_tokens=True) == [tok.eos_id, *tok.encode("hi"), tok.eos_id]


def test_gpt2_file_quirks(gpt2_like, tmp_path):
    """What GPT-2's own tokenizer.json has beyond the fixture's: merges as "a b" strings, empty
    prefix/suffix strings, a ByteLevel post-processor, a `normalized` special token."""
    from tokenizers import Tokenizer

    data = json.loads(gpt2_like[2].read_text())
    data["model"].update(
        merges=[" ".join(m) for m in data["model"]["merges"]],
        continuing_subword_prefix="",
        end_of_word_suffix="",
    )
    data["post_processor"] = {"type": "ByteLevel", "add_prefix_space": True,
                              "trim_offsets": False, "use_regex": True}  # fmt: skip
    data["added_tokens"][0]["normalized"] = True
    (tmp_path / "gpt2.json").write_text(json.dumps(data))
    tok = nima.get("tokenizer", "bpe").load(tmp_path / "gpt2.json")
    hf = Tokenizer.from_file(str(tmp_path / "gpt2.json"))
    for s in [SMALL_TEXT + EOT, *HARD_STRINGS]:
        assert tok.encode(s, allowed_special="all") == hf.encode(s).ids


def test_gpt2_like_file_padding_needs_a_pad_id(gpt2_like):
    tok = nima.get("tokenizer", "bpe").load(gpt2_like[2])  # a copy: set_role changes it
    with pytest.raises(ValueError, match="needs a pad token.*special tokens: <\\|endoftext"):
        tok.encode_batch(["a", "bcd"])
    out = tok.encode_batch(["a", "bcd"], pad_id=tok.eos_id)
    assert out["input_ids"][0] == tok.encode("a") + [tok.eos_id] * (len(tok.encode("bcd")) - 1)
    assert tok.encode_batch(["a", "bcd"], padding=False)["input_ids"][0] == tok.encode("a")
    with pytest.raises(ValueError, match="outside"):
        tok.encode_batch(["a"], pad_id=tok.vocab_size)
    tok.set_role("pad", EOT)
    assert tok.encode_batch(["a", "bcd"]) == out
    with pytest.raises(ValueError, match="'<pad>' is not a special token"):
        tok.set_role("pad", "<pad>")


def test_gpt2_like_file_saves_and_loads_both_ways(gpt2_like, tmp_path):
    from tokenizers import Tokenizer

    _, hf, path = gpt2_like
    tok = nima.get("tokenizer", "bpe").load(path)  # a copy: set_role changes it
    tok.set_role("pad", EOT)
    tok.save(tmp_path / "nima.json")
    back = nima.get("tokenizer", "bpe").load(tmp_path / "nima.json")
    assert back.roles == tok.roles and back.special_tokens == (EOT,)
    assert back.fingerprint() == tok.fingerprint()
    tok.save_huggingface(tmp_path / "hf.json")
    hf_back = Tokenizer.from_file(str(tmp_path / "hf.json"))
    for s in [SMALL_TEXT, f"a{EOT}b", *HARD_STRINGS]:
        ids = hf.encode(s).ids
        assert back.encode(s, allowed_special="all") == hf_back.encode(s).ids == ids
        assert back.decode(ids) == s


@PROPERTY
@given(s=st.lists(st.one_of(any_text, st.just(EOT)), max_size=4).map("".join))
def test_property_gpt2_like_matches_hugging_face(gpt2_like, s):
    tok, hf, _ = gpt2_like
    ids = tok.encode(s, allowed_special="all")
    assert ids == hf.encode(s).ids
    assert tok.decode(ids) == s


def test_version_1_files_still_load(small_pair, tmp_path):
    tok, _ = small_pair
    data = tok.to_dict()
    del data["special_ids"], data["roles"]
    (tmp_path / "v1.json").write_text(json.dumps({**data, "version": 1}))
    back = nima.get("tokenizer", "bpe").load(tmp_path / "v1.json")
    assert back.special_tokens == tuple(SPECIALS) and back.roles == tok.roles
    assert back.fingerprint() == tok.fingerprint()


# ----- the merge loop: HF's order (lowest rank, then leftmost), O(n log n) on long words --------

RUNS_TEXT = SMALL_TEXT + " ".join(
    ["e" * k for k in range(1, 60)]
    + ["".join(random.Random(k).choice("ACGT") for _ in range(200)) for k in range(10)]
    + ["ab" * k + "a" for k in range(1, 40)]
)


@pytest.fixture(scope="module")
def runs_pair():
    """NIMA and HF trained on text full of runs, so long words see many overlapping merges."""
    return train_both(RUNS_TEXT, 700)


runs = st.text(st.sampled_from("eeeeab ACGT\n"), max_size=400) | st.text(
    st.sampled_from("eAb"), min_size=20, max_size=2000
)


@PROPERTY
@given(s=runs)
def test_property_runs_match_hugging_face(runs_pair, s):
    tok, hf = runs_pair
    ids = tok.encode(s)
    assert ids == hf.encode(s).ids
    assert tok.decode(ids) == s


@PROPERTY
@given(word=st.lists(st.sampled_from("eeeeabACGT"), min_size=2, max_size=200).map("".join))
def test_property_short_and_long_merge_loops_agree(runs_pair, word):
    tok, _ = runs_pair
    byte_ids = [tok.token_to_id(c) for c in word]
    assert tok._merge_long(list(byte_ids)) == tok._merge_short(list(byte_ids))


def test_shuffled_merge_ranks_match_hugging_face(runs_pair, tmp_path):
    """Ranks in any order (a merged pair may outrank the merges that made its parts): both
    sides still apply the lowest rank first, the leftmost of equal ranks first."""
    from tokenizers import Tokenizer

    data = runs_pair[0].to_huggingface()
    random.Random(0).shuffle(data["model"]["merges"])
    (tmp_path / "shuffled.json").write_text(json.dumps(data))
    tok = nima.get("tokenizer", "bpe").load(tmp_path / "shuffled.json")
    hf = Tokenizer.from_file(str(tmp_path / "shuffled.json"))
    rng = random.Random(1)
    for _ in range(200):
        s = "".join(rng.choice("eeeab AC") for _ in range(rng.choice([5, 30, 300])))
        assert tok.encode(s) == hf.encode(s).ids, s


def test_a_merge_listed_twice_takes_its_last_rank_as_hugging_face():
    """HF's merge map keeps a pair's last rank: "ab" (ranks 0 and 2) loses to "bc" (rank 1)."""
    from tokenizers import Tokenizer

    data = train_both(SMALL_TEXT, 300)[0].to_huggingface()
    vocab = data["model"]["vocab"]
    data["model"]["vocab"] = {**vocab, "xy": len(vocab), "yz": len(vocab) + 1}
    data["model"]["merges"] = [["x", "y"], ["y", "z"], ["x", "y"]]
    tok = nima.get("tokenizer", "bpe").from_huggingface(data)
    assert Tokenizer.from_str(json.dumps(data)).encode("xyz").tokens == ["x", "yz"]
    assert [tok.id_to_token(i) for i in tok.encode("xyz")] == ["x", "yz"]


def test_long_words_encode_in_n_log_n(runs_pair):
    """64K symbols in one word: well under a second (the quadratic loop took minutes)."""
    tok, hf = runs_pair
    rng = random.Random(0)
    for s in ["e" * 65536, "".join(rng.choice("abeACGT") for _ in range(65536))]:
        start = time.perf_counter()
        ids = tok.encode(s)
        assert time.perf_counter() - start < 1.5
        assert ids == hf.encode(s).ids and tok.decode(ids) == s


def test_word_cache_is_bounded(runs_pair, monkeypatch):
    import nima_tokenizers.bpe as bpe

    tok = nima.get("tokenizer", "bpe").from_huggingface(runs_pair[0].to_huggingface())
    long_word = "e" * (bpe.CACHE_MAX_CHARS + 1)
    assert tok.encode(long_word + " e") == runs_pair[1].encode(long_word + " e").ids
    assert set(tok._cache) == {" e"}  # the long word was encoded, not kept
    monkeypatch.setattr(bpe, "CACHE_LIMIT", 10)
    for text in [" ".join(f"w{i}" for i in range(25)), " x y", "a b c d e f g h i j k l"]:
        assert tok.decode(tok.encode(text)) == text
        assert len(tok._cache) <= 10


# ----- the pre-tokenizer is the `regex` package: any Unicode property HF's regex knows ----------


def test_unicode_property_patterns_match_hugging_face(tmp_path):
    from tokenizers import Tokenizer

    pattern = r"\p{Han}|\p{Hiragana}+|[^\p{Han}\p{Hiragana}\P{L}]+|\p{Nd}+"
    tok = nima.get("tokenizer", "bpe")(vocab_size=300, pattern=pattern)
    tok.train(SMALL_TEXT + "日本語のテキストと中文 ひらがな 123")
    tok.save_huggingface(tmp_path / "han.json")
    hf = Tokenizer.from_file(str(tmp_path / "han.json"))
    for s in ["日本語のテキストと中文、ひらがなです。Ünïcode 123 ٣", *HARD_STRINGS]:
        assert tok.encode(s) == hf.encode(s).ids, s


@PROPERTY
@given(
    s=st.text(st.characters(max_codepoint=127), max_size=80)
    | st.text(st.sampled_from("ab1 \n\t\x1c\xa0é日\u3000'-"), max_size=120)
)
def test_property_gpt2_fast_path_splits_as_the_pattern(s, monkeypatch):
    """ASCII blocks through `re`, the rest through `regex`: the same pre-tokens either way."""
    import regex
    from nima_tokenizers import bpe

    monkeypatch.setattr(bpe, "GPT2_BLOCK", 4)  # many blocks, cut wherever the rule allows
    assert bpe._split_gpt2(regex.compile(bpe.GPT2_PATTERN), s) == regex.findall(bpe.GPT2_PATTERN, s)
