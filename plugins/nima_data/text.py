"""Plain-text datasets: Tiny Shakespeare (char and any tokenizer) and a user's own files."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

from nima.data.download import fetch
from nima.data.splits import check_fractions, split_text
from nima.errors import DataError

SHAKESPEARE_FILE = "tinyshakespeare.txt"
SHAKESPEARE_URL = (
    "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
)
SHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"


def _checksum(*parts: object) -> str:
    return hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).hexdigest()


def shakespeare_text() -> str:
    """Tiny Shakespeare (1,115,394 characters), verified against its sha256."""
    return fetch(SHAKESPEARE_FILE, SHAKESPEARE_URL, SHAKESPEARE_SHA256).read_text(encoding="utf-8")


class Shakespeare:
    """Tiny Shakespeare for any tokenizer; contiguous splits in order (default 90% / 10%)."""

    def __init__(self, fractions: Sequence[float] = (0.9, 0.1)) -> None:
        self.fractions = check_fractions(fractions, type(self).__name__)

    def splits(self) -> dict[str, str]:
        return split_text(shakespeare_text(), self.fractions, type(self).__name__)

    def checksum(self) -> str:
        return _checksum(type(self).__name__, SHAKESPEARE_SHA256, self.fractions)


class ShakespeareChar(Shakespeare):
    """Tiny Shakespeare as nanoGPT's shakespeare_char: 90% / 10% in order, for the char tokenizer."""

    suggested_tokenizer = "char"

    def __init__(self) -> None:
        super().__init__((0.9, 0.1))


class TextFile:
    """A user's UTF-8 text file or folder of files; contiguous splits in order.

    A folder contributes every file matching `pattern`, sorted by path, joined by a blank line.
    """

    def __init__(
        self, path: str = "", fractions: Sequence[float] = (0.9, 0.1), pattern: str = "*.txt"
    ) -> None:
        self.path = Path(path).expanduser()
        self.pattern = pattern
        self.fractions = check_fractions(fractions, "text_file")

    def files(self) -> list[Path]:
        if not str(self.path) or str(self.path) == ".":
            raise DataError(
                "text_file needs a path: bind text_file.path to a UTF-8 text file or a folder "
                "of them, e.g. `dataset.text_file.path = 'data/my_corpus.txt'`."
            )
        if self.path.is_file():
            return [self.path]
        if self.path.is_dir():
            files = sorted(p for p in self.path.rglob(self.pattern) if p.is_file())
            if not files:
                raise DataError(
                    f"text_file: folder {self.path} holds no file matching {self.pattern!r}; "
                    f"add UTF-8 text files or set text_file.pattern (e.g. '*.md')."
                )
            return files
        raise DataError(
            f"text_file: {self.path} does not exist; text_file.path must name a UTF-8 text file "
            f"or a folder of them."
        )

    def text(self) -> str:
        parts = []
        for file in self.files():
            try:
                parts.append(file.read_text(encoding="utf-8"))
            except UnicodeDecodeError as exc:
                raise DataError(
                    f"text_file: {file} is not valid UTF-8 (byte {exc.start}: {exc.reason}); "
                    f"convert it to UTF-8, e.g. `iconv -f latin1 -t utf-8`."
                ) from None
        return "\n\n".join(parts)

    def splits(self) -> dict[str, str]:
        return split_text(self.text(), self.fractions, "text_file")

    def checksum(self) -> str:
        digest = hashlib.sha256()
        for file in self.files():
            digest.update(
                str(file.relative_to(self.path) if self.path.is_dir() else file.name).encode()
            )
            digest.update(hashlib.sha256(file.read_bytes()).digest())
        return _checksum("TextFile", digest.hexdigest(), self.fractions, self.pattern)
