"""What every NIMA tokenizer shares: special tokens and their roles, batching, the versioned file.

A subclass sets `kind` and implements `_train(texts)`, `_encode_text(text)` (text holding no
special token -> ids) and `_decode_ids(ids)` (ids of ordinary tokens -> text). What its file
holds beyond the vocabulary goes through `_state()` / `_load_state(data)`.

Special tokens: a tokenizer trained here puts them first, in order: `<pad>`=0, `<unk>`=1,
`<sos>`=2, `<eos>`=3, then the user-defined ones. A loaded file may put others anywhere (GPT-2's
tokenizer.json has one, `<|endoftext|>`, at 50256). Each role (`pad`, `unk`, `sos`, `eos`) names
one special token or none: then its id (`pad_id`, ...) is None, and whatever needs it (padding,
`add_special_tokens`) raises a ValueError saying so. Special tokens are never produced from text
unless the caller passes `allowed_special`, so a file that happens to contain "<eos>" encodes
as ordinary characters.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

from nima import atomic
from nima.errors import CheckpointError, ConfigError

ROLES: tuple[str, ...] = ("pad", "unk", "sos", "eos")
SPECIAL_TOKENS: tuple[str, ...] = ("<pad>", "<unk>", "<sos>", "<eos>")  # NIMA's, one per role
FILE_FORMAT = "nima-tokenizer"
FILE_VERSION = 2  # 2 adds "special_ids" and "roles"; version 1 (specials first, NIMA's roles) reads
READABLE_VERSIONS = (1, 2)

# Role names of other tokenizers' special tokens (Hugging Face files name them, they do not
# assign roles). GPT-2 has only `<|endoftext|>`: it is its eos and its bos (see `roles_by_name`).
ROLE_NAMES: dict[str, tuple[str, ...]] = {
    "pad": ("<pad>", "[PAD]", "<|pad|>", "<|padding|>"),
    "unk": ("<unk>", "[UNK]", "<|unk|>"),
    "sos": ("<sos>", "<s>", "<bos>", "[BOS]", "<|bos|>", "<|startoftext|>", "<|begin_of_text|>"),
    "eos": ("<eos>", "</s>", "[EOS]", "<|eos|>", "<|endoftext|>", "<|end_of_text|>"),
}


# The mask token of masked-LM training is not a role a tokenizer is given (adding one to every
# tokenizer would shift every vocabulary): it is the special token of one of these names, which
# a config adds where it needs one, e.g. char.special_tokens = ['<mask>'].
MASK_TOKENS: tuple[str, ...] = ("<mask>", "[MASK]", "<|mask|>")


def roles_by_name(special_tokens: Collection[str], unk: str | None = None) -> dict[str, str | None]:
    """Each role's special token, recognised by its usual name (`ROLE_NAMES`), else None.

    `unk` is the token a file itself names as unknown (a Hugging Face BPE model's `unk_token`).
    A tokenizer without a start token whose end token is `<|endoftext|>` starts with it too,
    as GPT-2 does.
    """
    roles = {
        role: next((t for t in names if t in special_tokens), None)
        for role, names in ROLE_NAMES.items()
    }
    if unk is not None and unk in special_tokens:
        roles["unk"] = unk
    if roles["sos"] is None and roles["eos"] == "<|endoftext|>":
        roles["sos"] = roles["eos"]
    return roles


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
        self._roles: dict[str, str | None] = dict(zip(ROLES, SPECIAL_TOKENS, strict=True))
        self._set_vocab(list(self.special_tokens))

    # ----- vocabulary -----------------------------------------------------------------------

    def _set_vocab(self, tokens: list[str], special_ids: Mapping[str, int] | None = None) -> None:
        """Install id -> token. `special_ids` places each special token; without it this
        tokenizer's special tokens take the first ids, in order (the layout training makes)."""
        if special_ids is None:
            n = len(self.special_tokens)
            if tuple(tokens[:n]) != self.special_tokens:
                raise ValueError(
                    f"vocabulary must start with the special tokens {self.special_tokens}"
                )
            special_ids = {t: i for i, t in enumerate(self.special_tokens)}
        for token, i in special_ids.items():
            if not (isinstance(i, int) and 0 <= i < len(tokens) and tokens[i] == token):
                raise ValueError(f"special token {token!r} is not at id {i} of the vocabulary")
        self._vocab = tokens
        self._special_ids = dict(sorted(special_ids.items(), key=lambda item: item[1]))
        self.special_tokens = tuple(self._special_ids)
        self._special_id_set = frozenset(self._special_ids.values())
        # Ordinary tokens: what text encodes to. An ordinary token equal to a special one keeps
        # its own id here; `_ids` (token_to_id) gives the special one.
        self._ordinary: dict[str, int] = {}
        for i, token in enumerate(tokens):
            if i not in self._special_id_set:
                self._ordinary.setdefault(token, i)
        self._ids = {**self._ordinary, **self._special_ids}

    @property
    def vocab_size(self) -> int:
        return len(self._vocab)

    @property
    def roles(self) -> dict[str, str | None]:
        """The special token of each role (`pad`, `unk`, `sos`, `eos`), or None where unset."""
        return dict(self._roles)

    def set_role(self, role: str, token: str | None) -> None:
        """Give `role` to the special token `token` (None unsets it), e.g. pad with GPT-2's eos."""
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}; the roles are {', '.join(ROLES)}")
        if token is not None and token not in self._special_ids:
            raise ValueError(
                f"{token!r} is not a special token of this {self.kind} tokenizer; its special "
                f"tokens are {', '.join(self.special_tokens) or 'none'}"
            )
        self._roles[role] = token

    def _role_id(self, role: str) -> int | None:
        token = self._roles[role]
        return None if token is None else self._special_ids[token]

    @property
    def pad_id(self) -> int | None:
        return self._role_id("pad")

    @property
    def unk_id(self) -> int | None:
        return self._role_id("unk")

    @property
    def sos_id(self) -> int | None:
        return self._role_id("sos")

    @property
    def eos_id(self) -> int | None:
        return self._role_id("eos")

    @property
    def mask_token(self) -> str | None:
        """The masked-LM mask: the first special token named as in MASK_TOKENS, else None."""
        return next((t for t in MASK_TOKENS if t in self._special_ids), None)

    @property
    def mask_id(self) -> int | None:
        token = self.mask_token
        return None if token is None else self._special_ids[token]

    def _require_role(self, role: str, needed_by: str) -> int:
        """The id of `role`, or a ValueError saying what needed it and how to go without."""
        token_id = self._role_id(role)
        if token_id is None:
            raise ValueError(
                f"{needed_by} needs a {role} token, and this {self.kind} tokenizer has none (its "
                f"special tokens: {', '.join(self.special_tokens) or 'none'}). Give the role to "
                f"one of them with set_role({role!r}, token), or do without it."
            )
        return token_id

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
        """Learn the vocabulary from a string or an iterable of strings (replaces any previous
        one; the special tokens and roles are kept, the special tokens taking the first ids)."""
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
        """Token ids of `text`; the sos and eos tokens around it if `add_special_tokens`.

        Special tokens written in `text` become their ids only if listed in `allowed_special`
        (or it is "all"); otherwise they are encoded as ordinary text.
        """
        self._require_trained()
        if not isinstance(text, str):
            raise TypeError(f"encode expects a str, got {type(text).__name__}")
        if add_special_tokens:
            sos = self._require_role("sos", "encode(..., add_special_tokens=True)")
            eos = self._require_role("eos", "encode(..., add_special_tokens=True)")
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
            ids = [sos, *ids, eos]
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
        if not tokens:
            return None
        tokens.sort(key=len, reverse=True)  # longest first, so "<eos2>" is not read as "<eos>"
        return re.compile("|".join(re.escape(t) for t in tokens))

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        """Text of `ids`; special tokens appear literally unless `skip_special_tokens`."""
        self._require_trained()
        ids = [int(i) for i in ids]
        self._check_ids(ids)
        special = self._special_id_set
        parts: list[str] = []
        run: list[int] = []
        for i in ids:
            if i not in special:
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
        pad_id: int | None = None,
    ) -> dict[str, Any]:
        """`{"input_ids", "attention_mask"}` for several texts.

        With `truncation`, sequences longer than `max_length` lose tokens on `truncation_side`.
        With `padding`, sequences are padded on `padding_side` to `max_length` if given, else to
        the longest, with `pad_id` if given, else the pad token (a ValueError if there is none);
        the mask is 1 on real tokens and 0 on padding. Tensors ("pt") and arrays ("np") need
        equal lengths, so they need padding.
        """
        if padding_side not in ("right", "left") or truncation_side not in ("right", "left"):
            raise ValueError("padding_side and truncation_side must be 'right' or 'left'")
        if truncation and max_length is None:
            raise ValueError("truncation=True needs max_length")
        if return_tensors not in (None, "pt", "np"):
            raise ValueError(f"return_tensors must be None, 'pt' or 'np', got {return_tensors!r}")
        if padding:
            if pad_id is None:
                pad_id = self._require_role("pad", "encode_batch(..., padding=True) without pad_id")
            self._check_ids([pad_id])
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
                    batch[k], masks[k] = ids + [pad_id] * fill, masks[k] + [0] * fill
                else:
                    batch[k], masks[k] = [pad_id] * fill + ids, [0] * fill + masks[k]
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
            "special_tokens": [t for t in self.special_tokens if t not in SPECIAL_TOKENS],
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
            "special_ids": dict(self._special_ids),
            "roles": dict(self._roles),
            **self._state(),
        }

    def fingerprint(self) -> str:
        """sha256 of the tokenizer's file content: equal fingerprints encode identically."""
        blob = json.dumps(self.to_dict(), sort_keys=True, ensure_ascii=True).encode()
        return hashlib.sha256(blob).hexdigest()

    def save(self, path: str | Path) -> None:
        """Write one JSON file, atomically (a killed process leaves the old file or none)."""
        atomic.write_text(path, json.dumps(self.to_dict(), ensure_ascii=False, indent=1))

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
            if data["version"] == 1:  # the special tokens first, with NIMA's roles
                tokenizer._set_vocab(vocab)
            else:
                tokenizer._set_vocab(vocab, data["special_ids"])
                roles = data["roles"]
                if set(roles) != set(ROLES):
                    raise ValueError(f"'roles' must name exactly the roles {', '.join(ROLES)}")
                for role, token in roles.items():
                    tokenizer.set_role(role, token)
            tokenizer._load_state(data)
            tokenizer.trained = bool(data["trained"])
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
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
    if data.get("version") not in READABLE_VERSIONS:
        raise CheckpointError(
            f"Tokenizer file {path} has format version {data.get('version')!r}; this NIMA reads "
            f"versions {' and '.join(map(str, READABLE_VERSIONS))}. Use the NIMA version that "
            f"wrote it, or train a new tokenizer."
        )
    if not isinstance(data.get("kind"), str):
        raise CheckpointError(f'Tokenizer file {path} is corrupt (no "kind").')
    return data
