"""The interoperability reference for byte-level BPE: a Hugging Face `tokenizers` model trained
with the settings NIMA's `bpe` uses (GPT-2 byte-level pre-tokenizer, no prefix space). Needs the
`tokenizers` package (a dev dependency); nothing is downloaded."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

SPECIAL_TOKENS = ("<pad>", "<unk>", "<sos>", "<eos>")


def train_hf_bytelevel_bpe(
    text: str,
    vocab_size: int,
    special_tokens: Sequence[str] = SPECIAL_TOKENS,
    added_after: Sequence[str] = (),
):
    """A `tokenizers.Tokenizer` byte-level BPE trained on `text`, comparable with `bpe`.

    `special_tokens` take the first ids, as NIMA's training puts them; `added_after` are special
    tokens added once the merges are learned, so they take the last ids, as GPT-2's
    `<|endoftext|>` (50256) does.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([text], trainer)
    tok.add_special_tokens(list(added_after))
    return tok


# --- the conformance kit: round trip, save/load, special tokens, encode_batch padding ---------

CORPUS = (
    "First Citizen:\nBefore we proceed any further, hear me speak.\n"
    "All:\nSpeak, speak.\n"
    "Zoë said: naïve café — 日本語 text, tabs\tand  double  spaces!\n"
    "Numbers 0123456789 and symbols #$%&()*+-/<=>?@[]^_{|}~\n"
    "Second line's quotes \"here\" and 'there'.\n" + " ".join(chr(c) for c in range(33, 127)) + "\n"
    # every printable ASCII character, so that a tokenizer losing any of them fails round_trip
)
EXAMPLES = 40  # hypothesis examples per property (a fixed seed: the same in CI and on a laptop)


def _hypothesis(strategy, prop, *always: Any) -> None:
    """Run `prop` on `always`, then on `strategy`'s examples, derandomized, no example database
    on disk."""
    from hypothesis import HealthCheck, given, settings

    for value in always:
        prop(value)
    run = settings(
        max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
        suppress_health_check=list(HealthCheck),
    )(given(strategy)(prop))  # fmt: skip
    run()


def _trained(make) -> Any:
    """A tokenizer from `make` (nima.testing.kit.maker) trained on CORPUS."""
    tokenizer = make()
    tokenizer.train(CORPUS)
    return tokenizer


def check_round_trip(tokenizer, *, any_text: bool) -> None:
    """decode(encode(text)) == text: on the whole training corpus (every printable ASCII
    character) and text recombined from its lines, or with `any_text` on arbitrary Unicode (a
    byte-level tokenizer, no unknown token)."""
    from hypothesis import strategies as st

    lines = CORPUS.splitlines()
    seen = st.lists(st.sampled_from(lines), max_size=6).map("\n".join)
    strategy = st.text(max_size=60) if any_text else seen

    def prop(text: str) -> None:
        got = tokenizer.decode(tokenizer.encode(text))
        assert got == text, f"decode(encode(text)) gave {got!r} for text {text!r}"

    _hypothesis(strategy, prop, CORPUS)


def check_save_load(tokenizer, folder: Path) -> None:
    """save then load (the class's `load`) gives the same vocabulary, ids and special tokens."""
    path = folder / "tokenizer.json"
    tokenizer.save(path)
    loaded = type(tokenizer).load(path)
    assert loaded.vocab_size == tokenizer.vocab_size, (
        f"vocab_size {tokenizer.vocab_size} saved, {loaded.vocab_size} loaded"
    )
    for role in ("pad_id", "unk_id", "sos_id", "eos_id"):
        a, b = getattr(tokenizer, role, None), getattr(loaded, role, None)
        assert a == b, f"{role} {a} saved, {b} loaded"
    want = tokenizer.encode(CORPUS)
    got = loaded.encode(CORPUS)
    assert got == want, "the loaded tokenizer encodes the corpus differently"


def check_special_tokens(tokenizer) -> None:
    """Special ids are distinct and in the vocabulary; add_special_tokens wraps the text in sos
    and eos; decode(..., skip_special_tokens=True) drops them again."""
    roles = {r: getattr(tokenizer, f"{r}_id", None) for r in ("pad", "unk", "sos", "eos")}
    ids = [i for i in roles.values() if i is not None]
    assert all(0 <= i < tokenizer.vocab_size for i in ids), f"special ids {roles} outside vocab"
    owned = {r: i for r, i in roles.items() if i is not None and r != "sos"}  # sos may be eos
    assert len(set(owned.values())) == len(owned), f"special ids {roles} collide"
    text = "Speak, speak."
    plain = tokenizer.encode(text)
    if roles["sos"] is not None and roles["eos"] is not None:
        wrapped = tokenizer.encode(text, add_special_tokens=True)
        assert wrapped == [roles["sos"], *plain, roles["eos"]], (
            f"encode(add_special_tokens=True) gave {wrapped}, expected sos {roles['sos']} + "
            f"{plain} + eos {roles['eos']}"
        )
        back = tokenizer.decode(wrapped, skip_special_tokens=True)
        assert back == text, f"decode(skip_special_tokens=True) gave {back!r} for {text!r}"


def check_encode_batch(tokenizer) -> None:
    """encode_batch pads every row to the longest with pad_id; attention_mask is 1 on the real
    tokens (which equal `encode`'s) and 0 on the padding."""
    texts = ["Speak, speak.", "", "First Citizen:\nBefore we proceed any further"]
    batch = tokenizer.encode_batch(texts)
    rows, masks = [list(map(int, r)) for r in batch["input_ids"]], batch["attention_mask"]
    masks = [list(map(int, m)) for m in masks]
    encoded = [tokenizer.encode(t) for t in texts]
    width = max(len(e) for e in encoded)
    for text, ids, row, mask in zip(texts, encoded, rows, masks, strict=True):
        assert len(row) == width and len(mask) == width, (
            f"row of {text!r} has {len(row)} ids and {len(mask)} mask entries, expected {width}"
        )
        real = [i for i, m in zip(row, mask, strict=True) if m == 1]
        pads = [i for i, m in zip(row, mask, strict=True) if m == 0]
        assert real == ids, f"the unpadded ids of {text!r} are {real}, encode gives {ids}"
        assert all(i == tokenizer.pad_id for i in pads), (
            f"padding of {text!r} is {pads}, expected pad_id {tokenizer.pad_id}"
        )


def tokenizer_checks(entry, device: str) -> list:
    """A tokenizer plugin's checks, trained with its defaults on a small corpus."""
    import tempfile

    from nima.testing.kit import Check, maker

    unk = bool(entry.capabilities.get("unk", False))

    def with_tokenizer(fn):
        def run():
            return fn(_trained(maker(entry)))

        return run

    def save_load(tokenizer):
        with tempfile.TemporaryDirectory(prefix="nima-check-") as folder:
            check_save_load(tokenizer, Path(folder))

    def check(capability: str, what: str, declared: bool, fn) -> Check:
        return Check("tokenizer", entry.name, capability, what, declared, with_tokenizer(fn))

    return [
        check("round_trip", "decode(encode(text)) == text on the training text's lines", True,
              lambda t: check_round_trip(t, any_text=False)),
        check("any_text", "decode(encode(text)) == text on any Unicode text (no unk)", not unk,
              lambda t: check_round_trip(t, any_text=True)),
        check("save_load", "save then load keeps vocabulary, ids and special tokens", True,
              save_load),
        check("special_tokens", "sos/eos wrap the text, skip_special_tokens drops them", True,
              check_special_tokens),
        check("encode_batch", "padding with pad_id and an attention mask", True,
              check_encode_batch),
    ]  # fmt: skip
