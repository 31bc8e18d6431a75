"""tokenizer.file: a trained tokenizer read from a file (fine-tuning keeps the vocabulary the
weights were trained with): a NIMA tokenizer file of any kind, or a Hugging Face byte-level BPE
tokenizer.json (GPT-2's)."""

from __future__ import annotations

import json
from pathlib import Path

from nima.data.tokens import load_tokenizer
from nima_tokenizers.base import Tokenizer
from nima_tokenizers.bpe import BPETokenizer


def from_file(path: str = "") -> Tokenizer:
    """A trained tokenizer from `path`: NIMA's tokenizer file or a Hugging Face tokenizer.json."""
    file = Path(path)
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        data = None  # load_tokenizer names what is wrong
    if isinstance(data, dict) and "model" in data and "format" not in data:
        return BPETokenizer.load(file)  # Hugging Face's format
    return load_tokenizer(file)
