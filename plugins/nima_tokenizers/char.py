"""Character-level tokenizer: one token per Unicode code point, as in nanoGPT's shakespeare_char.

Round trip: `decode(encode(s)) == s` whenever every character of `s` was seen in training (and
kept under the `vocab_size` cap). Any other character encodes as `<unk>`, which decodes as the
literal text "<unk>" (or nothing with `skip_special_tokens=True`).
"""

from __future__ import annotations

from collections import Counter

from nima_tokenizers.base import Tokenizer


class CharTokenizer(Tokenizer):
    """Character-level tokenizer: one token per code point; unseen characters become <unk>."""

    kind = "char"

    def _train(self, texts: list[str]) -> None:
        counts: Counter[str] = Counter()
        for text in texts:
            counts.update(text)
        for special in self.special_tokens:
            counts.pop(special, None)  # a one-character special token is not also a plain char
        chars = sorted(counts, key=lambda c: (-counts[c], c))
        if self.max_vocab_size is not None:
            chars = chars[: self.max_vocab_size - len(self.special_tokens)]  # most frequent
        self._set_vocab([*self.special_tokens, *sorted(chars)])

    def _encode_text(self, text: str) -> list[int]:
        get, unk = self._ordinary.get, self._require_role("unk", "char encoding")
        return [get(c, unk) for c in text]

    def _decode_ids(self, ids: list[int]) -> str:
        vocab = self._vocab
        return "".join([vocab[i] for i in ids])
