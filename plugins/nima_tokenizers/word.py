"""Word-level tokenizer: words and punctuation marks, each with at most one leading space.

Text is cut into pieces by `PIECE`: a word (`\\w+`) or one punctuation mark, each optionally
preceded by ONE space (" king", ","), or one whitespace character on its own (the second space
of a double space, a newline). The `vocab_size` most frequent pieces form the vocabulary, plus
" " (always kept, so unknown words keep their spacing).

Spacing rule: decoding concatenates the pieces, so `decode(encode(s)) == s` exactly when every
piece of `s` is in the vocabulary. An unknown piece becomes `<unk>`, keeping its leading space
as the " " token: "the zounds" with " zounds" unknown decodes as "the <unk>".
"""

from __future__ import annotations

import re
from collections import Counter

from nima_tokenizers.base import Tokenizer

PIECE = re.compile(r" ?\w+| ?[^\w\s]|\s")


class WordTokenizer(Tokenizer):
    """Word-level tokenizer: most frequent words/punctuation (with their space); rest <unk>."""

    kind = "word"

    def _train(self, texts: list[str]) -> None:
        counts: Counter[str] = Counter()
        for text in texts:
            counts.update(PIECE.findall(text))
        for special in self.special_tokens:
            counts.pop(special, None)
        pieces = sorted(counts, key=lambda p: (-counts[p], p))
        pieces = [" ", *(p for p in pieces if p != " ")]
        if self.max_vocab_size is not None:
            pieces = pieces[: self.max_vocab_size - len(self.special_tokens)]
        self._set_vocab([*self.special_tokens, *pieces])

    def _encode_text(self, text: str) -> list[int]:
        get, unk, ids = self._ordinary.get, self._require_role("unk", "word encoding"), []
        space = self._ordinary.get(" ")
        for piece in PIECE.findall(text):
            i = get(piece)
            if i is not None:
                ids.append(i)
            elif piece[0] == " " and len(piece) > 1 and space is not None:
                ids += (space, unk)
            else:
                ids.append(unk)
        return ids

    def _decode_ids(self, ids: list[int]) -> str:
        vocab = self._vocab
        return "".join([vocab[i] for i in ids])
