"""The interoperability reference for byte-level BPE: a Hugging Face `tokenizers` model trained
with the settings NIMA's `bpe` uses (GPT-2 byte-level pre-tokenizer, no prefix space). Needs the
`tokenizers` package (a dev dependency); nothing is downloaded."""

from __future__ import annotations

from collections.abc import Sequence

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
