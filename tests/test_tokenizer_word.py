"""The word tokenizer: pieces, vocabulary cap, spacing rule and <unk>; char/word property tests."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

import nima

TEXT = "The king is dead.  Long live the king!\nThe queen, the king's wife, lives.\n"


def word(**kwargs):
    tok = nima.get("tokenizer", "word")(**kwargs)
    tok.train(TEXT)
    return tok


def test_pieces_carry_one_leading_space():
    tok = word()
    tokens = [tok.id_to_token(i) for i in tok.encode("The king is dead.")]
    assert tokens == ["The", " king", " is", " dead", "."]
    assert [tok.id_to_token(i) for i in tok.encode("  king\n")] == [" ", " king", "\n"]


def test_round_trip_in_vocabulary():
    tok = word()
    assert tok.decode(tok.encode(TEXT)) == TEXT


def test_vocab_cap_keeps_most_frequent_and_space():
    tok = word(vocab_size=4 + 3)
    kept = [tok.id_to_token(i) for i in range(4, tok.vocab_size)]
    # " " always; then the most frequent pieces: " king" (3 times), "\n" (2) ties " the" (2)...
    assert kept[0] == " " and kept[1] == " king"
    assert tok.vocab_size == 7


def test_unknown_words_keep_their_space():
    tok = word()
    ids = tok.encode("The zounds king")
    assert tok.decode(ids) == "The <unk> king"
    assert tok.decode(ids, skip_special_tokens=True) == "The  king"
    assert tok.encode("zounds")[0] == tok.unk_id


def test_save_load(tmp_path):
    tok = word(vocab_size=10)
    tok.save(tmp_path / "w.json")
    back = type(tok).load(tmp_path / "w.json")
    assert back.get_vocab() == tok.get_vocab() and back.encode(TEXT) == tok.encode(TEXT)


WORDS = [" king", " queen", "The", " the", " is"]
SEPARATORS = [",", ".", "\n", "!"]  # no " ": it would fuse with the next word piece


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(WORDS), st.sampled_from(SEPARATORS)), max_size=15))
def test_property_word_round_trip_over_known_pieces(pairs):
    tok = word()
    text = "".join(w + sep for w, sep in pairs)
    assert tok.decode(tok.encode(text)) == text


@settings(max_examples=100, deadline=None)
@given(st.text(st.sampled_from("kingqueThe ,.!\n'zx"), max_size=40))
def test_property_word_unk_rule(text):
    tok = word()
    vocab = set(tok.get_vocab())
    # Oracle: each maximal word/punct with its optional space, unknown ones -> [space]<unk>.
    expected = ""
    for piece in re.findall(r" ?\w+| ?[^\w\s]|\s", text):
        if piece in vocab:
            expected += piece
        else:
            expected += (" " if piece.startswith(" ") and len(piece) > 1 else "") + "<unk>"
    assert tok.decode(tok.encode(text)) == expected


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=50), st.text(max_size=50))
def test_property_char_round_trip_and_unk(train, text):
    tok = nima.get("tokenizer", "char")()
    tok.train(train + "x")
    seen = set(train + "x")
    ids = tok.encode(text)
    assert len(ids) == len(text)
    assert tok.decode(ids) == "".join(c if c in seen else "<unk>" for c in text)
    assert tok.decode(tok.encode(train)) == train
