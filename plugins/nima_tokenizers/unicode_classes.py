"""`\\p{L}`-style Unicode classes for Python's `re`, which lacks them.

The GPT-2 pre-tokenisation pattern needs `\\p{L}` (letters) and `\\p{N}` (numbers), and its `\\s`
means Unicode White_Space (Python's `\\s` also matches U+001C..U+001F, which would split text
differently from Hugging Face `tokenizers`). `translate(pattern)` rewrites `\\p{X}`, `\\P{X}`,
`\\s` and `\\S` into explicit character classes built from `unicodedata`, so the `regex`
package is not needed. Categories follow Python's Unicode database; Rust's may be a version
apart, which only matters for characters assigned in between.
"""

from __future__ import annotations

import functools
import itertools
import re
import sys
import unicodedata

# The Unicode White_Space property (PropList.txt); stable since Unicode 6.3.
WHITE_SPACE = (
    "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008"
    "\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)


def _ranges(spans: list[tuple[int, int]]) -> str:
    """Class body (no brackets) for sorted inclusive (first, last) code point spans."""
    merged: list[list[int]] = []
    for first, last in spans:
        if merged and first == merged[-1][1] + 1:
            merged[-1][1] = last
        else:
            merged.append([first, last])
    return "".join(_escape(a) if a == b else f"{_escape(a)}-{_escape(b)}" for a, b in merged)


def _escape(cp: int) -> str:
    return f"\\U{cp:08x}"


@functools.lru_cache(maxsize=1)
def _category_spans() -> list[tuple[int, int, str]]:
    """(first, last, category) for every run of code points of one general category."""
    categories = list(map(unicodedata.category, map(chr, range(sys.maxunicode + 1))))
    spans, first = [], 0
    for category, run in itertools.groupby(categories):
        n = sum(1 for _ in run)
        spans.append((first, first + n - 1, category))
        first += n
    return spans


@functools.cache
def category_class(name: str, bmp_only: bool = False) -> str:
    """Class body for general category `name` ("L", "Lu", "N", ...), built once per name.

    `bmp_only` drops code points above U+FFFF: `re` tests those as a list of ranges, one by
    one, for every character, which makes the full class about 4x slower on BMP-only text.
    """
    if not re.fullmatch(r"[A-Z][a-z]?", name):
        raise ValueError(f"unsupported Unicode property \\p{{{name}}}: use a general category")
    spans = [(a, b) for a, b, category in _category_spans() if category.startswith(name)]
    if bmp_only:
        spans = [(a, min(b, 0xFFFF)) for a, b in spans if a <= 0xFFFF]
    if not spans:
        raise ValueError(f"unknown Unicode general category {name!r}")
    return _ranges(spans)


WHITE_SPACE_CLASS = _ranges([(ord(c), ord(c)) for c in WHITE_SPACE])
_TOKEN = re.compile(r"\\[pP]\{(\w+)\}|\\[pP](\w)|\\.|\[\^?|\]|[^\\\[\]]+", re.DOTALL)


def translate(pattern: str, bmp_only: bool = False) -> str:
    """`pattern` with `\\p{X}`, `\\P{X}`, `\\s`, `\\S` replaced by explicit classes.

    Inside a bracket class the positive forms expand in place; a negated form (`\\P{X}`, `\\S`)
    inside a bracket class cannot be expressed and raises ValueError.
    """
    out, depth = [], 0
    pos = 0
    for m in _TOKEN.finditer(pattern):
        if m.start() != pos:
            raise ValueError(f"cannot parse pattern {pattern!r} at {pos}")
        pos = m.end()
        tok = m.group()
        name = m.group(1) or m.group(2)
        if name or tok in ("\\s", "\\S"):
            negated = tok.startswith("\\P") or tok == "\\S"
            body = category_class(name, bmp_only) if name else WHITE_SPACE_CLASS
            if depth:
                if negated:
                    raise ValueError(f"{tok} inside a [...] class is not supported in {pattern!r}")
                out.append(body)
            else:
                out.append(f"[{'^' if negated else ''}{body}]")
        elif tok in ("[", "[^"):
            if depth:  # a literal "[" inside a class
                out.append("\\[" + tok[1:])
                continue
            depth = 1
            out.append(tok)
        elif tok == "]" and depth:
            depth = 0
            out.append(tok)
        else:
            out.append(tok)
    if pos != len(pattern):
        raise ValueError(f"cannot parse pattern {pattern!r} at {pos}")
    return "".join(out)


_ASTRAL = re.compile("[\U00010000-\U0010ffff]")


class PreTokenizer:
    """Splits text into pre-tokens with a `\\p{..}` pattern; the gaps between matches are
    pre-tokens too (as Hugging Face's Split with "isolated" behaviour), so nothing is lost."""

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern
        self._full = re.compile(translate(pattern))
        self._bmp = re.compile(translate(pattern, bmp_only=True))
        self._plain = self._full.groups == 0  # findall returns whole matches

    def split(self, text: str) -> list[str]:
        regex = self._full if _ASTRAL.search(text) else self._bmp
        if self._plain:
            pieces = regex.findall(text)
            if sum(map(len, pieces)) == len(text):
                return pieces
        pieces, start = [], 0
        for m in regex.finditer(text):
            if m.start() > start:
                pieces.append(text[start : m.start()])
            if m.end() > m.start():
                pieces.append(m.group())
            start = m.end()
        if start < len(text):
            pieces.append(text[start:])
        return pieces


@functools.lru_cache(maxsize=32)
def pretokenizer(pattern: str) -> PreTokenizer:
    """A cached PreTokenizer (building the classes takes a fraction of a second, once)."""
    return PreTokenizer(pattern)
