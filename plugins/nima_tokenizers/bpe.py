"""Byte-level BPE (GPT-2 style), trained in pure Python, interoperable with Hugging Face files.

Encoding: text -> pre-tokens -> UTF-8 bytes -> merges by rank, the lowest rank first and, among
equal ranks, the leftmost first, exactly as Hugging Face `tokenizers` applies them. Pre-tokens
come from a regex (GPT-2's by default) run by the `regex` package, which knows `\\p{..}` as HF's
engine does; GPT-2's pattern on ASCII text runs as an equivalent `re` pattern, twice as fast.
Every string encodes without `<unk>`, except one holding a lone surrogate (U+D800..U+DFFF),
which has no UTF-8 form: encode raises ValueError naming it. `decode(encode(s)) == s` for every
other string (with `add_prefix_space=False`, the default). Decoding ids that cut a character in
half gives U+FFFD for the broken bytes, as Hugging Face does.

A long word (one the pre-tokenizer does not split: a run of letters, digits or whitespace)
merges in O(n log n): a linked list of symbols and a heap of (rank, position) candidates, stale
candidates skipped when popped (HF's `Word::merge_all`). Words of at most `SHORT_WORD` bytes, the
common case, take a plain scan for the lowest rank, which is faster at that size. Encoded words
are cached, up to `CACHE_LIMIT` of them and none longer than `CACHE_MAX_CHARS`.

Training keeps, for each adjacent pair, its count (weighted by pre-token frequency) and the
set of pre-tokens that hold it; a merge updates only those pre-tokens, and the best pair comes
from a lazy max-heap (stale entries are re-checked when popped). Ties go to the smallest pair
of ids, the bytes taking ids in the order of their GPT-2 unicode characters, as in Hugging Face
`tokenizers`, so both learn the same merges from the same text.
"""

from __future__ import annotations

import functools
import heapq
import itertools
import json
import re
from collections import Counter, defaultdict
from itertools import pairwise
from pathlib import Path
from typing import Any

import regex

from nima import atomic
from nima.errors import CheckpointError, ConfigError
from nima_tokenizers.base import Tokenizer, roles_by_name

GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
# The same pattern for ASCII text, where \p{L} is [A-Za-z], \p{N} is [0-9] and \s (Unicode
# White_Space) is [\t\n\v\f\r ]: Python's `re` runs it twice as fast as `regex` runs the original.
GPT2_ASCII = re.compile(
    r"""'s|'t|'re|'ve|'m|'ll|'d| ?[A-Za-z]+| ?[0-9]+| ?[^\t\n\v\f\r A-Za-z0-9]+"""
    r"""|[\t\n\v\f\r ]+(?![^\t\n\v\f\r ])|[\t\n\v\f\r ]+"""
)
GPT2_BLOCK = 1 << 14  # characters; a long text is split block by block (see _split_gpt2)
CACHE_LIMIT = 100_000  # words whose encoding is remembered; emptied when it holds more
CACHE_MAX_CHARS = 256  # longer words are encoded each time (as HF does), never cached
SHORT_WORD = 24  # bytes; up to here the quadratic scan (in C) beats the heap (in Python)
_NONE = 1 << 62  # the rank of a pair that has no merge


@functools.lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character map: printable Latin-1 bytes map to themselves,
    the other 68 bytes to U+0100 onward, so every token is a readable string."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), 256)]
    mapping = {b: chr(b) for b in keep}
    extra = (b for b in range(256) if b not in mapping)
    mapping.update({b: chr(256 + n) for n, b in enumerate(extra)})
    return dict(sorted(mapping.items()))


@functools.lru_cache(maxsize=1)
def unicode_to_bytes() -> dict[str, int]:
    return {c: b for b, c in bytes_to_unicode().items()}


class BPETokenizer(Tokenizer):
    """Byte-level BPE (GPT-2 style): any text encodes, no <unk>; loads/saves HF tokenizer.json."""

    kind = "bpe"

    def __init__(
        self,
        vocab_size: int | None = 4096,
        special_tokens: list[str] | tuple[str, ...] = (),
        pattern: str | None = GPT2_PATTERN,
        add_prefix_space: bool = False,
        ignore_merges: bool = False,
    ) -> None:
        super().__init__(vocab_size, special_tokens)
        n_base = len(self.special_tokens) + 256
        if vocab_size is not None and vocab_size < n_base:
            raise ConfigError(
                f"bpe tokenizer: vocab_size={vocab_size} is below the {n_base} tokens every "
                f"byte-level vocabulary holds (256 bytes + {len(self.special_tokens)} special)."
            )
        self.pattern = pattern or None
        self.add_prefix_space = add_prefix_space
        self.ignore_merges = (
            ignore_merges  # HF option: a pre-token already in the vocab is kept whole
        )
        try:
            self._pre = regex.compile(self.pattern) if self.pattern else None
        except regex.error as exc:
            raise ConfigError(
                f"bpe tokenizer: pattern {pattern!r} is not a valid regex: {exc}"
            ) from None

    # ----- vocabulary and merges ------------------------------------------------------------

    def _set_vocab(self, tokens: list[str], special_ids: dict[str, int] | None = None) -> None:
        super()._set_vocab(tokens, special_ids)
        b2u, u2b = bytes_to_unicode(), unicode_to_bytes()
        self._byte_ids = [self._ordinary.get(b2u[b]) for b in range(256)]
        self._token_bytes = [
            bytes(u2b[c] for c in t)
            if all(c in u2b for c in t)
            else t.encode("utf-8", "surrogatepass")
            for t in tokens
        ]
        self._merges, self._rank_of, self._new_of, self._cache = [], {}, [], {}

    def _set_merges(self, merges: list[tuple[int, int]]) -> None:
        rank_of, new_of = {}, []
        for rank, (a, b) in enumerate(merges):
            merged = self._vocab[a] + self._vocab[b]
            if merged not in self._ordinary:
                raise ValueError(
                    f"merge {rank} ({self._vocab[a]!r}, {self._vocab[b]!r}) makes a token not in the vocab"
                )
            rank_of[(a, b)] = rank  # a pair listed twice has its last rank, as in HF
            new_of.append(self._ordinary[merged])
        self._merges, self._rank_of, self._new_of, self._cache = list(merges), rank_of, new_of, {}

    @property
    def merges(self) -> list[tuple[str, str]]:
        """The merges in rank order, as token strings (GPT-2 byte characters)."""
        return [(self._vocab[a], self._vocab[b]) for a, b in self._merges]

    # ----- training -------------------------------------------------------------------------

    def _pieces(self, text: str) -> list[str]:
        if self.add_prefix_space and text and not text.startswith(" "):
            text = " " + text
        if self._pre is None:
            return [text] if text else []
        if self.pattern == GPT2_PATTERN:
            return _split_gpt2(self._pre, text)
        return _split(self._pre, text)

    def _train(self, texts: list[str]) -> None:
        counts: Counter[str] = Counter()
        for text in texts:
            counts.update(self._pieces(text))
        b2u = bytes_to_unicode()
        self._set_vocab([*self.special_tokens, *sorted(b2u.values())])
        vocab, ids, byte_ids = list(self._vocab), dict(self._ordinary), self._byte_ids
        cap = self.max_vocab_size if self.max_vocab_size is not None else float("inf")

        words = [[byte_ids[b] for b in _utf8(piece)] for piece in counts]
        freq = list(counts.values())
        pair_counts: dict[tuple[int, int], int] = defaultdict(int)
        where: dict[tuple[int, int], set[int]] = defaultdict(set)
        for w, (word, n) in enumerate(zip(words, freq, strict=True)):
            for pair in pairwise(word):
                pair_counts[pair] += n
                where[pair].add(w)
        heap = [(-n, pair) for pair, n in pair_counts.items()]
        heapq.heapify(heap)

        merges: list[tuple[int, int]] = []
        while len(vocab) < cap and heap:
            neg, pair = heapq.heappop(heap)
            n = pair_counts.get(pair, 0)
            if n != -neg:  # stale entry: its count fell since it was pushed
                if n > 0:
                    heapq.heappush(heap, (-n, pair))
                continue
            a, b = pair
            token = vocab[a] + vocab[b]
            new = ids.get(token)
            if new is None:  # two merges may spell the same token: they share its id (as HF)
                new = ids[token] = len(vocab)
                vocab.append(token)
            merges.append(pair)
            gained: set[tuple[int, int]] = set()
            for w in where.pop(pair):
                word = words[w]
                merged = _merge(word, a, b, new)
                if len(merged) == len(word):
                    continue  # stale: the pair left this word in an earlier merge
                n_w = freq[w]
                for p in pairwise(word):
                    pair_counts[p] -= n_w
                for p in pairwise(merged):
                    pair_counts[p] += n_w
                    if new in p:
                        where[p].add(w)
                        gained.add(p)
                words[w] = merged
            del pair_counts[pair]
            for p in gained:
                if pair_counts[p] > 0:
                    heapq.heappush(heap, (-pair_counts[p], p))
        self._set_vocab(vocab)
        self._set_merges(merges)

    # ----- encode / decode ------------------------------------------------------------------

    def _encode_text(self, text: str) -> list[int]:
        pieces = self._pieces(text)
        cache = self._cache
        fresh = {piece: self._bpe(piece) for piece in set(pieces).difference(cache)}
        cache.update(fresh)  # for this call; what may not stay leaves below
        ids = list(itertools.chain.from_iterable(map(cache.__getitem__, pieces)))
        for piece in fresh:
            if len(piece) > CACHE_MAX_CHARS:
                del cache[piece]
        if len(cache) > CACHE_LIMIT:
            cache.clear()
        return ids

    def _bpe(self, piece: str) -> list[int]:
        """The piece's bytes, merged: the lowest rank first, the leftmost of equal ranks first."""
        data = _utf8(piece)
        if self.ignore_merges:
            whole = "".join(bytes_to_unicode()[b] for b in data)
            if whole in self._ordinary:
                return [self._ordinary[whole]]
        word = [self._byte_ids[b] for b in data]
        if None in word:
            raise ValueError(
                f"bpe tokenizer: byte 0x{data[word.index(None)]:02x} of {piece!r} has no token "
                f"in this vocabulary (a byte-level vocabulary should hold all 256 bytes)."
            )
        if len(word) <= SHORT_WORD:
            return self._merge_short(word)
        return self._merge_long(word)

    def _merge_short(self, word: list[int]) -> list[int]:
        """Merge by scanning for the leftmost lowest rank after each merge: O(n^2), but the scan
        is a min/index in C, the fastest way for the short words of ordinary text."""
        get, new_of = self._rank_of.get, self._new_of
        ranks = [get(pair, _NONE) for pair in pairwise(word)]
        while ranks:
            rank = min(ranks)
            if rank == _NONE:
                break
            i = ranks.index(rank)
            word[i] = new_of[rank]
            del word[i + 1], ranks[i]
            if i > 0:
                ranks[i - 1] = get((word[i - 1], word[i]), _NONE)
            if i < len(ranks):
                ranks[i] = get((word[i], word[i + 1]), _NONE)
        return word

    def _merge_long(self, word: list[int]) -> list[int]:
        """Merge in O(n log n) (HF's `Word::merge_all`): symbols in a linked list, candidate
        merges in a min-heap keyed by (rank, position), so the leftmost of the lowest rank pops
        first; a candidate whose pair has changed since it was pushed is skipped when popped."""
        get, new_of = self._rank_of.get, self._new_of
        n = len(word)
        shift = n.bit_length()  # heap key: rank << shift | position, one int compares fastest
        mask = (1 << shift) - 1
        nxt = list(range(1, n + 1))  # n: no next symbol
        prv = list(range(-1, n - 1))  # -1: no previous symbol
        heap = [r << shift | i for i, r in enumerate(map(get, pairwise(word))) if r is not None]
        heapq.heapify(heap)
        pop, push = heapq.heappop, heapq.heappush
        while heap:
            key = pop(heap)
            i = key & mask
            j = nxt[i]
            if j == n or word[i] < 0 or get((word[i], word[j])) != key >> shift:
                continue  # stale: symbol i was merged into its left, or its pair changed
            new = word[i] = new_of[key >> shift]
            word[j] = -1  # removed
            k = nxt[i] = nxt[j]
            if k < n:
                prv[k] = i
                rank = get((new, word[k]))
                if rank is not None:
                    push(heap, rank << shift | i)
            p = prv[i]
            if p >= 0:
                rank = get((word[p], new))
                if rank is not None:
                    push(heap, rank << shift | p)
        return [t for t in word if t >= 0]

    def _decode_ids(self, ids: list[int]) -> str:
        token_bytes = self._token_bytes
        return b"".join([token_bytes[i] for i in ids]).decode("utf-8", errors="replace")

    # ----- files: NIMA's own and Hugging Face tokenizer.json --------------------------------

    def _config(self) -> dict[str, Any]:
        return {
            **super()._config(),
            "pattern": self.pattern,
            "add_prefix_space": self.add_prefix_space,
            "ignore_merges": self.ignore_merges,
        }

    def _state(self) -> dict[str, Any]:
        return {"merges": [list(m) for m in self.merges]}

    def _load_state(self, data: dict[str, Any]) -> None:
        self._set_merges(self._merge_ids(data["merges"]))

    def _merge_ids(self, merges: list) -> list[tuple[int, int]]:
        out = []
        for m in merges:
            a, b = m.split(" ", 1) if isinstance(m, str) else m  # HF wrote "a b" before 0.20
            out.append((self._ordinary[a], self._ordinary[b]))
        return out

    @classmethod
    def load(cls, path: str | Path) -> BPETokenizer:
        """A NIMA bpe file, or a Hugging Face tokenizer.json of a byte-level BPE model."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            data = None  # the base class reports it
        if isinstance(data, dict) and "model" in data and "format" not in data:
            return cls.from_huggingface(data, path)
        return super().load(path)

    @classmethod
    def from_huggingface(cls, data: dict[str, Any], path: Path | str = "<dict>") -> BPETokenizer:
        """Build from a parsed Hugging Face tokenizer.json; unsupported parts are a clear error.

        Special tokens keep the ids the file gives them; roles are recognised by name
        (`nima_tokenizers.base.roles_by_name`: GPT-2's `<|endoftext|>` is eos and sos), others
        stay unset. The file's post_processor is not read: `add_special_tokens` puts the sos
        and eos tokens around the text.
        """
        try:
            return cls._from_hf(data)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            what = f"missing field {exc}" if isinstance(exc, KeyError) else str(exc)
            raise CheckpointError(
                f"Hugging Face tokenizer file {path} cannot be used as a NIMA bpe tokenizer: {what}. "
                f"Supported: a BPE model with a ByteLevel pre-tokenizer (or Split regex + ByteLevel), "
                f"no normalizer, no byte_fallback, ids contiguous from 0, and added tokens that are "
                f"special, at any id, without single_word, lstrip or rstrip."
            ) from None

    @classmethod
    def _from_hf(cls, data: dict[str, Any]) -> BPETokenizer:
        model = data["model"]
        if model.get("type") != "BPE":
            raise ValueError(f"model type is {model.get('type')!r}, not 'BPE'")
        for key in ("continuing_subword_prefix", "end_of_word_suffix", "dropout"):
            if model.get(key):
                raise ValueError(f"model.{key} = {model[key]!r} is not supported")
        if model.get("byte_fallback") or data.get("normalizer"):
            raise ValueError("byte_fallback and normalizers are not supported")
        pattern, add_prefix_space = _read_hf_pre_tokenizer(data.get("pre_tokenizer"))
        vocab_map: dict[str, int] = dict(model["vocab"])
        special_ids: dict[str, int] = {}
        for added in data.get("added_tokens", []):
            # HF splits every added token out of the text before the model sees it; NIMA does
            # that for special tokens (when allowed), so a plain added token would encode apart.
            content, i = added["content"], added["id"]
            if not added.get("special"):
                raise ValueError(f"added token {content!r} (id {i}) is not special")
            unsupported = [k for k in ("single_word", "lstrip", "rstrip") if added.get(k)]
            if unsupported:
                raise ValueError(f"special token {content!r} sets {', '.join(unsupported)}")
            if vocab_map.setdefault(content, i) != i:
                raise ValueError(
                    f"special token {content!r} has id {i}, the model vocab {vocab_map[content]}"
                )
            special_ids[content] = i
        by_id = sorted((i, t) for t, i in vocab_map.items())
        if [i for i, _ in by_id] != list(range(len(by_id))):
            raise ValueError("vocabulary ids are not contiguous from 0")
        tokenizer = cls(
            vocab_size=None,  # no training cap: it was trained elsewhere
            pattern=pattern,
            add_prefix_space=add_prefix_space,
            ignore_merges=bool(model.get("ignore_merges", False)),
        )
        tokenizer._set_vocab([t for _, t in by_id], special_ids)
        for role, token in roles_by_name(special_ids, model.get("unk_token")).items():
            tokenizer.set_role(role, token)
        tokenizer._set_merges(tokenizer._merge_ids(model["merges"]))
        tokenizer.trained = True
        return tokenizer

    def to_huggingface(self) -> dict[str, Any]:
        """This tokenizer as a Hugging Face tokenizer.json object."""
        added = [
            {"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
             "normalized": False, "special": True}
            for t, i in self._special_ids.items()
        ]  # fmt: skip
        byte_level = {"type": "ByteLevel", "add_prefix_space": self.add_prefix_space,
                      "trim_offsets": True, "use_regex": self.pattern == GPT2_PATTERN}  # fmt: skip
        if self.pattern in (None, GPT2_PATTERN):
            pre_tokenizer: dict[str, Any] = byte_level
        else:
            split = {
                "type": "Split",
                "pattern": {"Regex": self.pattern},
                "behavior": "Isolated",
                "invert": False,
            }
            pre_tokenizer = {"type": "Sequence", "pretokenizers": [split, byte_level]}
        special = self._special_id_set  # a special token also in the model vocab, unless an
        vocab = {  # ordinary token of the same text holds that entry
            t: i for i, t in enumerate(self._vocab) if i not in special or t not in self._ordinary
        }
        return {
            "version": "1.0",
            "truncation": None,
            "padding": None,
            "added_tokens": added,
            "normalizer": None,
            "pre_tokenizer": pre_tokenizer,
            "post_processor": None,
            "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
            "model": {
                "type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
                "ignore_merges": self.ignore_merges, "vocab": vocab,
                "merges": [list(m) for m in self.merges],
            },
        }  # fmt: skip

    def save_huggingface(self, path: str | Path) -> None:
        """Write a tokenizer.json that Hugging Face `tokenizers.Tokenizer.from_file` reads."""
        self._require_trained()
        atomic.write_text(path, json.dumps(self.to_huggingface(), ensure_ascii=False))


def _split(pattern: regex.Pattern, text: str) -> list[str]:
    """The pattern's matches and the gaps between them, in order (HF's Split, "Isolated"), so
    nothing of `text` is lost."""
    if not pattern.groups:
        pieces = pattern.findall(text)
        if sum(map(len, pieces)) == len(text):  # the matches cover the text (GPT-2's always do)
            return pieces
    pieces, start = [], 0
    for m in pattern.finditer(text):
        if m.start() > start:
            pieces.append(text[start : m.start()])
        if m.end() > m.start():
            pieces.append(m.group())
        start = m.end()
    if start < len(text):
        pieces.append(text[start:])
    return pieces


def _split_gpt2(pattern: regex.Pattern, text: str) -> list[str]:
    """GPT-2's pre-tokens, block by block: a block of ASCII text (most of English) goes through
    `GPT2_ASCII`, twice as fast as `pattern`. A block ends at a line break that follows a
    non-space character: no pre-token spans that point (only whitespace-led pre-tokens hold
    whitespace past their first character), so the blocks split as the whole text would."""
    if text.isascii():  # O(1): CPython records it
        return GPT2_ASCII.findall(text)
    pieces, start = [], 0
    while start < len(text):
        end = text.find("\n", start + GPT2_BLOCK)
        while end > 0 and text[end - 1].isspace():  # isspace() covers Unicode White_Space
            end = text.find("\n", end + 1)
        end = len(text) if end < 0 else end
        block = text[start:end]
        pieces += (GPT2_ASCII if block.isascii() else pattern).findall(block)
        start = end
    return pieces


def _utf8(piece: str) -> bytes:
    try:
        return piece.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(
            f"bpe tokenizer: the text holds a lone surrogate U+{ord(piece[exc.start]):04X} "
            f"(in {piece!r}), which has no UTF-8 encoding; byte-level BPE encodes UTF-8 bytes. "
            f"Remove it or replace it, e.g. text.encode('utf-8', 'replace').decode()."
        ) from None


def _merge(word: list[int], a: int, b: int, new: int) -> list[int]:
    """`word` with every (a, b) replaced by `new`, scanning left to right."""
    out, i, n = [], 0, len(word)
    while i < n:
        if i + 1 < n and word[i] == a and word[i + 1] == b:
            out.append(new)
            i += 2
        else:
            out.append(word[i])
            i += 1
    return out


def _read_hf_pre_tokenizer(pre: dict[str, Any] | None) -> tuple[str | None, bool]:
    """(pattern, add_prefix_space) of a ByteLevel or Sequence[Split, ByteLevel] pre-tokenizer."""
    if pre is None:
        raise ValueError("it has no pre_tokenizer (a byte-level BPE needs ByteLevel)")
    parts = pre["pretokenizers"] if pre.get("type") == "Sequence" else [pre]
    *splits, byte_level = parts
    if byte_level.get("type") != "ByteLevel":
        raise ValueError(f"its pre_tokenizer ends in {byte_level.get('type')!r}, not ByteLevel")
    pattern = GPT2_PATTERN if byte_level.get("use_regex", True) else None
    if splits:
        (split,) = splits
        ok = (
            split.get("type") == "Split"
            and split.get("behavior") == "Isolated"
            and not split.get("invert")
        )
        if not ok or "Regex" not in split.get("pattern", {}) or pattern is not None:
            raise ValueError(
                "only one Split(Regex, Isolated) before ByteLevel(use_regex=false) is supported"
            )
        pattern = split["pattern"]["Regex"]
    return pattern, bool(byte_level.get("add_prefix_space", False))
