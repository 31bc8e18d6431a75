"""What every NIMA tokenizer shares: special tokens, batching and the versioned JSON file.

A subclass sets `kind` and implements `_train(texts)`, `_encode_text(text)` (text holding no
special token -> ids) and `_decode_ids(ids)` (ids of ordinary tokens -> text). What its file
holds beyond the vocabulary goes through `_state()` / `_load_state(data)`.

Special tokens always take the first ids, in order: `<pad>`=0, `<unk>`=1, `<sos>`=2, `<eos>`=3,
then the user-defined ones. They are never produced from text unless the caller passes
`allowed_special`, so a file that happens to contain "<eos>" encodes as ordinary characters.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from collections.abc import Collection, Iterable, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

from nima.errors import CheckpointError, ConfigError

SPECIAL_TOKENS: tuple[str, ...] = ("<pad>", "<unk>", "<sos>", "<eos>")
FILE_FORMAT = "nima-tokenizer"
FILE_VERSION = 1


class Tokenizer:
    """Base class of the built-in tokenizers (see the module docstring for the contract)."""

    kind: ClassVar[str] = ""

    def __init__(self, vocab_size: int | None = None, special_tokens: Sequence[str] = ()) -> None:
        if isinstance(special_tokens, str):
            special_tokens = [special_tokens]
        self.special_tokens: tuple[str, ...] = tuple(
            dict.fromkeys([*SPECIAL_TOKENS, *special_tokens])
        )
        if any(not isinstance(t, str) or not t for t in self.special_tokens):
            raise ConfigError(f"special_tokens must be non-empty strings, got {special_tokens!r}")
        if vocab_size is not None and vocab_size <= len(self.special_tokens):
            raise ConfigError(
                f"{self.kind} tokenizer: vocab_size={vocab_size} leaves no room beside the "
                f"{len(self.special_tokens)} special tokens; use a larger vocab_size or None."
            )
        self.max_vocab_size = vocab_size
        self.trained = False
        self._set_vocab(list(self.special_tokens))

    # ----- vocabulary -----------------------------------------------------------------------

    def _set_vocab(self, tokens: list[str]) -> None:
        """Install id -> token; the special tokens must come first, in order."""
        n = len(self.special_tokens)
        if tuple(tokens[:n]) != self.special_tokens:
            raise ValueError(f"vocabulary must start with the special tokens {self.special_tokens}")
        self._vocab = tokens
        self._ids = {}
        for i, token in enumerate(tokens):
            self._ids.setdefault(token, i)  # a special token wins over an equal ordinary one
        self._special_ids = {t: i for i, t in enumerate(self.special_tokens)}

    @property
    def vocab_size(self) -> int:
        return len(self._vocab)

    @property
    def pad_id(self) -> int:
        return 0

    @property
    def unk_id(self) -> int:
        return 1

    @property
    def sos_id(self) -> int:
        return 2

    @property
    def eos_id(self) -> int:
        return 3

    def token_to_id(self, token: str) -> int:
        try:
            return self._ids[token]
        except KeyError:
            raise KeyError(f"token {token!r} is not in this {self.kind} vocabulary") from None

    def id_to_token(self, token_id: int) -> str:
        self._check_ids([token_id])
        return self._vocab[token_id]

    def get_vocab(self) -> dict[str, int]:
        return dict(self._ids)

    def _check_ids(self, ids: Iterable[int]) -> None:
        bad = [i for i in ids if not 0 <= i < len(self._vocab)]
        if bad:
            raise ValueError(
                f"token id {bad[0]} is outside this {self.kind} vocabulary (ids 0..{len(self._vocab) - 1})"
            )

    # ----- training -------------------------------------------------------------------------

    def train(self, texts: str | Iterable[str]) -> None:
        """Learn the vocabulary from a string or an iterable of strings (replaces any previous one)."""
        self._train([texts] if isinstance(texts, str) else list(texts))
        self.trained = True

    def _train(self, texts: list[str]) -> None:
        raise NotImplementedError

    def _require_trained(self) -> None:
        if not self.trained:
            raise RuntimeError(
                f"this {self.kind} tokenizer has no vocabulary yet: call train(texts) or load(path) first"
            )

    # ----- encode / decode ------------------------------------------------------------------

    def encode(
        self,
        text: str,
        add_special_tokens: bool = False,
        allowed_special: Literal["all"] | Collection[str] = (),
    ) -> list[int]:
        """Token ids of `text`; `<sos>`/`<eos>` around it if `add_special_tokens`.

        Special tokens written in `text` become their ids only if listed in `allowed_special`
        (or it is "all"); otherwise they are encoded as ordinary text.
        """
        self._require_trained()
        if not isinstance(text, str):
            raise TypeError(f"encode expects a str, got {type(text).__name__}")
        pattern = self._special_pattern(allowed_special)
        if pattern is None:
            ids = self._encode_text(text)
        else:
            ids, start = [], 0
            for match in pattern.finditer(text):
                ids += self._encode_text(text[start : match.start()])
                ids.append(self._special_ids[match.group()])
                start = match.end()
            ids += self._encode_text(text[start:])
        if add_special_tokens:
            ids = [self.sos_id, *ids, self.eos_id]
        return ids

    def _special_pattern(self, allowed: Literal["all"] | Collection[str]) -> re.Pattern | None:
        if not allowed:
            return None
        tokens = list(self.special_tokens) if allowed == "all" else list(allowed)
        unknown = [t for t in tokens if t not in self._special_ids]
        if unknown:
            raise ValueError(
                f"allowed_special names {unknown[0]!r}, which is not a special token of this "
                f"tokenizer; its special tokens are {', '.join(self.special_tokens)}"
            )
        tokens.sort(key=len, reverse=True)  # longest first, so "<eos2>" is not read as "<eos>"
        return re.compile("|".join(re.escape(t) for t in tokens))

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        """Text of `ids`; special tokens appear literally unless `skip_special_tokens`."""
        self._require_trained()
        ids = [int(i) for i in ids]
        self._check_ids(ids)
        n_special = len(self.special_tokens)
        parts: list[str] = []
        run: list[int] = []
        for i in ids:
            if i >= n_special:
                run.append(i)
                continue
            if run:
                parts.append(self._decode_ids(run))
                run = []
            if not skip_special_tokens:
                parts.append(self._vocab[i])
        if run:
            parts.append(self._decode_ids(run))
        return "".join(parts)

    def _encode_text(self, text: str) -> list[int]:
        raise NotImplementedError

    def _decode_ids(self, ids: list[int]) -> str:
        raise NotImplementedError

    def encode_batch(
        self,
        texts: Sequence[str],
        add_special_tokens: bool = False,
        *,
        padding: bool = True,
        max_length: int | None = None,
        truncation: bool = False,
        padding_side: Literal["right", "left"] = "right",
        truncation_side: Literal["right", "left"] = "right",
        return_tensors: Literal["pt", "np"] | None = None,
        allowed_special: Literal["all"] | Collection[str] = (),
    ) -> dict[str, Any]:
        """`{"input_ids", "attention_mask"}` for several texts.

        With `truncation`, sequences longer than `max_length` lose tokens on `truncation_side`.
        With `padding`, sequences are padded with `<pad>` on `padding_side` to `max_length` if
        given, else to the longest; the mask is 1 on real tokens and 0 on padding. Tensors
        ("pt") and arrays ("np") need equal lengths, so they need padding.
        """
        if padding_side not in ("right", "left") or truncation_side not in ("right", "left"):
            raise ValueError("padding_side and truncation_side must be 'right' or 'left'")
        if truncation and max_length is None:
            raise ValueError("truncation=True needs max_length")
        if return_tensors not in (None, "pt", "np"):
            raise ValueError(f"return_tensors must be None, 'pt' or 'np', got {return_tensors!r}")
        batch = [self.encode(t, add_special_tokens, allowed_special) for t in texts]
        if truncation:
            batch = [
                ids[:max_length]
                if truncation_side == "right"
                else ids[max(0, len(ids) - max_length) :]
                for ids in batch
            ]
        masks = [[1] * len(ids) for ids in batch]
        if padding:
            width = max([len(ids) for ids in batch], default=0)
            width = max(width, max_length or 0)
            for k, ids in enumerate(batch):
                fill = width - len(ids)
                if padding_side == "right":
                    batch[k], masks[k] = ids + [self.pad_id] * fill, masks[k] + [0] * fill
                else:
                    batch[k], masks[k] = [self.pad_id] * fill + ids, [0] * fill + masks[k]
        elif return_tensors is not None and len({len(ids) for ids in batch}) > 1:
            raise ValueError("return_tensors needs sequences of one length: use padding=True")
        if return_tensors is None:
            return {"input_ids": batch, "attention_mask": masks}
        import numpy as np

        shape = (len(batch), len(batch[0]) if batch else 0)
        arrays = {
            "input_ids": np.array(batch, dtype=np.int64).reshape(shape),
            "attention_mask": np.array(masks, dtype=np.int64).reshape(shape),
        }
        if return_tensors == "pt":
            import torch

            return {name: torch.from_numpy(a) for name, a in arrays.items()}
        return arrays

    # ----- the file -------------------------------------------------------------------------

    def _config(self) -> dict[str, Any]:
        """Constructor arguments that rebuild this tokenizer before its state is loaded."""
        return {
            "vocab_size": self.max_vocab_size,
            "special_tokens": list(self.special_tokens[len(SPECIAL_TOKENS) :]),
        }

    def _state(self) -> dict[str, Any]:
        return {}

    def _load_state(self, data: dict[str, Any]) -> None:
        """Install what `_state` wrote; the vocabulary is already set."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FILE_FORMAT,
            "version": FILE_VERSION,
            "kind": self.kind,
            "config": self._config(),
            "trained": self.trained,
            "vocab": list(self._vocab),
            **self._state(),
        }

    def fingerprint(self) -> str:
        """sha256 of the tokenizer's file content: equal fingerprints encode identically."""
        blob = json.dumps(self.to_dict(), sort_keys=True, ensure_ascii=True).encode()
        return hashlib.sha256(blob).hexdigest()

    def save(self, path: str | Path) -> None:
        """Write one JSON file, atomically (a killed process leaves the old file or none)."""
        atomic_write_text(Path(path), json.dumps(self.to_dict(), ensure_ascii=False, indent=1))

    @classmethod
    def load(cls, path: str | Path) -> Tokenizer:
        """A tokenizer from a file written by `save`; a clear CheckpointError for anything else."""
        path = Path(path)
        data = read_tokenizer_file(path)
        if data["kind"] != cls.kind:
            raise CheckpointError(
                f"Tokenizer file {path} holds a {data['kind']!r} tokenizer, not a {cls.kind!r} one. "
                f"Load it with nima.get('tokenizer', {data['kind']!r}).load(path), or "
                f"nima.data.tokens.load_tokenizer(path), which picks the kind from the file."
            )
        return cls._from_dict(data, path)

    @classmethod
    def _from_dict(cls, data: dict[str, Any], path: Path) -> Tokenizer:
        try:
            tokenizer = cls(**data["config"])
            vocab = data["vocab"]
            if not isinstance(vocab, list) or not all(isinstance(t, str) for t in vocab):
                raise ValueError("'vocab' must be a list of strings")
            tokenizer._set_vocab(vocab)
            tokenizer._load_state(data)
            tokenizer.trained = bool(data["trained"])
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            what = f"missing field {exc}" if isinstance(exc, KeyError) else str(exc)
            raise CheckpointError(
                f"Tokenizer file {path} is corrupt ({what}). It is a {FILE_FORMAT} file but its "
                f"content does not describe a valid {cls.kind!r} tokenizer; save the tokenizer "
                f"again, or train a new one."
            ) from None
        return tokenizer


def read_tokenizer_file(path: Path) -> dict[str, Any]:
    """The parsed JSON of a NIMA tokenizer file, after checking format and version."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CheckpointError(f"Tokenizer file {path} does not exist.") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"Tokenizer file {path} cannot be read: {exc}.") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CheckpointError(
            f"Tokenizer file {path} is truncated or not JSON ({exc.msg} at line {exc.lineno}, "
            f"column {exc.colno}). It was probably written half-way; save the tokenizer again."
        ) from None
    if not isinstance(data, dict) or data.get("format") != FILE_FORMAT:
        raise CheckpointError(
            f'Tokenizer file {path} is not a NIMA tokenizer file (no "format": "{FILE_FORMAT}" '
            f"field). NIMA reads files written by Tokenizer.save; a Hugging Face tokenizer.json "
            f"of a byte-level BPE model loads with nima.get('tokenizer', 'bpe').load(path)."
        )
    if data.get("version") != FILE_VERSION:
        raise CheckpointError(
            f"Tokenizer file {path} has format version {data.get('version')!r}; this NIMA reads "
            f"version {FILE_VERSION}. Use the NIMA version that wrote it, or train a new tokenizer."
        )
    if not isinstance(data.get("kind"), str):
        raise CheckpointError(f'Tokenizer file {path} is corrupt (no tokenizer "kind").')
    return data


def atomic_write_text(path: Path, text: str) -> None:
    """Write to a temporary file beside `path`, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
