"""Token arrays for training: a dataset's splits encoded by a tokenizer, cached on disk.

`prepare_tokens(dataset, tokenizer)` trains the tokenizer on the train split if it has no
vocabulary yet, encodes every split, and returns the ids as numpy arrays. The arrays are cached
as .npy files (opened as read-only memmaps) under `$NIMA_CACHE_DIR/tokens/<key>/`, where the key
hashes the dataset checksum, every split's text and the tokenizer's content before training: a
changed source, split or tokenizer is a different key. An entry is written through
`nima.atomic.atomic_dir` (a hidden temporary folder, fsynced, renamed into place), so it appears
whole or not at all; reading checks each array against the entry's meta.json.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nima.atomic import atomic_dir
from nima.contracts import Dataset, Tokenizer
from nima.data.download import cache_dir
from nima.errors import CheckpointError, DataError, NimaError

CACHE_VERSION = 1
META = "meta.json"
TOKENIZER_FILE = "tokenizer.json"


@dataclass
class PreparedData:
    """Token ids per split (integer numpy arrays), the trained tokenizer, and what they came from."""

    splits: dict[str, np.ndarray]
    tokenizer: Tokenizer
    metadata: dict[str, Any] = field(default_factory=dict)
    cache_path: Path | None = None

    def bits_per_char(self, loss: float, split: str = "val") -> float:
        """A mean loss in nats per token as bits per character of `split`'s text.

        Comparable across tokenizers: total bits over the split divided by its characters.
        """
        info = self.metadata["splits"][split]
        return loss * info["tokens"] / info["chars"] / math.log(2)


def tokens_root() -> Path:
    return cache_dir() / "tokens"


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def tokenizer_fingerprint(tokenizer: Tokenizer) -> str:
    """sha256 of the tokenizer's saved file (its own `fingerprint()` when it has one)."""
    if hasattr(tokenizer, "fingerprint"):
        return tokenizer.fingerprint()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / TOKENIZER_FILE
        tokenizer.save(path)
        return hashlib.sha256(path.read_bytes()).hexdigest()


def is_trained(tokenizer: Tokenizer) -> bool:
    """Whether the tokenizer has a vocabulary (`trained`, else more than its 4 special tokens)."""
    return bool(getattr(tokenizer, "trained", tokenizer.vocab_size > 4))


def dataset_name(dataset: Dataset) -> str:
    """The registry name of the dataset's class if registered, else its class name."""
    from nima.hooks import system

    entry = system().registries["dataset"].find(dataset)
    return entry.name if entry is not None else type(dataset).__name__


def prepare_tokens(
    dataset: Dataset, tokenizer: Tokenizer, *, cache: bool = True, root: str | Path | None = None
) -> PreparedData:
    """Encode every split of `dataset` with `tokenizer` (trained on "train" first if needed)."""
    texts = dataset.splits()
    if "train" not in texts or not texts["train"]:
        raise DataError(
            f"dataset {dataset_name(dataset)!r} has no (or an empty) 'train' split; its splits "
            f"are {sorted(texts)}. A dataset must give at least a non-empty 'train' text."
        )
    text_sums = {name: _sha256(text) for name, text in texts.items()}
    data_checksum = dataset.checksum()
    key_source = {
        "cache_version": CACHE_VERSION,
        "dataset_checksum": data_checksum,
        "splits": text_sums,
        "tokenizer": tokenizer_fingerprint(tokenizer),
    }
    key = hashlib.sha256(json.dumps(key_source, sort_keys=True).encode()).hexdigest()[:32]
    root = Path(root) if root is not None else tokens_root()
    if cache:
        hit = read_cache(root / key, type(tokenizer))
        if hit is not None:
            return hit

    if not is_trained(tokenizer):
        tokenizer.train(texts["train"])
    dtype = np.uint16 if tokenizer.vocab_size <= 1 << 16 else np.uint32
    arrays = {name: np.asarray(tokenizer.encode(text), dtype=dtype) for name, text in texts.items()}
    metadata = {
        "cache_version": CACHE_VERSION,
        "key": key,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "dataset": dataset_name(dataset),
        "dataset_checksum": data_checksum,
        "tokenizer": {
            "kind": getattr(tokenizer, "kind", type(tokenizer).__name__),
            "class": f"{type(tokenizer).__module__}.{type(tokenizer).__qualname__}",
            "fingerprint": tokenizer_fingerprint(tokenizer),
            "vocab_size": tokenizer.vocab_size,
            "file": TOKENIZER_FILE,
        },
        "dtype": np.dtype(dtype).name,
        "splits": {
            name: {
                "tokens": int(arrays[name].size),
                "chars": len(text),
                "bytes": len(text.encode("utf-8", "surrogatepass")),
                "sha256": text_sums[name],
            }
            for name, text in texts.items()
        },
    }
    if not cache:
        return PreparedData(arrays, tokenizer, metadata)
    return write_cache(root / key, arrays, tokenizer, metadata)


def write_cache(
    path: Path, arrays: dict[str, np.ndarray], tokenizer: Tokenizer, metadata: dict[str, Any]
) -> PreparedData:
    """Write an entry atomically to `path` and read it back."""
    if path.exists() and read_cache(path, type(tokenizer)) is None:  # a broken entry: replace it
        shutil.rmtree(path, ignore_errors=True)
    try:
        with atomic_dir(path) as tmp:
            for name, array in arrays.items():
                np.save(tmp / f"{name}.npy", array)
            tokenizer.save(tmp / TOKENIZER_FILE)
            (tmp / META).write_text(json.dumps(metadata, indent=1), encoding="utf-8")
    except FileExistsError:
        pass  # another process completed the same (identical) entry first
    hit = read_cache(path, type(tokenizer))
    if hit is None:
        raise DataError(f"token cache {path} could not be read back after writing it.")
    return hit


def read_cache(path: Path, tokenizer_cls: type) -> PreparedData | None:
    """The cached entry at `path`, or None if it is absent, incomplete or inconsistent."""
    try:
        metadata = json.loads((path / META).read_text(encoding="utf-8"))
        if metadata["key"] != path.name:  # a renamed or foreign folder
            return None
        splits = {}
        for name, info in metadata["splits"].items():
            array = np.load(path / f"{name}.npy", mmap_mode="r", allow_pickle=False)
            if array.ndim != 1 or array.size != info["tokens"]:
                return None
            splits[name] = array
        tokenizer = tokenizer_cls.load(path / TOKENIZER_FILE)
    except (OSError, ValueError, KeyError, TypeError, NimaError):
        return None
    return PreparedData(splits, tokenizer, metadata, path)


def load_tokenizer(path: str | Path) -> Tokenizer:
    """A tokenizer from a NIMA tokenizer file, built by the registered plugin its "kind" names."""
    import nima

    path = Path(path)
    try:
        kind = json.loads(path.read_text(encoding="utf-8")).get("kind")
    except (OSError, ValueError, AttributeError):
        kind = None
    if not isinstance(kind, str):
        raise CheckpointError(
            f"Tokenizer file {path} is missing, truncated or not a NIMA tokenizer file "
            f'(no readable "kind" field); save the tokenizer again with Tokenizer.save.'
        )
    return nima.get("tokenizer", kind).load(path)


def cache_entries(root: str | Path | None = None) -> list[dict[str, Any]]:
    """Metadata of every complete cache entry, plus `path` and `size_bytes` (for `nima data info`)."""
    root = Path(root) if root is not None else tokens_root()
    entries = []
    for path in sorted(root.glob("*")) if root.is_dir() else []:
        if path.name.startswith("."):  # a temporary folder being written
            continue
        try:
            metadata = json.loads((path / META).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        size = sum(f.stat().st_size for f in path.iterdir())
        entries.append({**metadata, "path": str(path), "size_bytes": size})
    return entries
