"""Built-in NIMA tokenizer plugins, registered through the `nima` entry-point group."""

from nima import hookimpl
from nima_tokenizers.base import SPECIAL_TOKENS, Tokenizer
from nima_tokenizers.bpe import BPETokenizer
from nima_tokenizers.char import CharTokenizer
from nima_tokenizers.files import from_file
from nima_tokenizers.word import WordTokenizer

__all__ = ["SPECIAL_TOKENS", "BPETokenizer", "CharTokenizer", "Tokenizer", "WordTokenizer"]


@hookimpl
def nima_register(registry) -> None:
    """Register the built-in tokenizer plugins."""
    registry.tokenizer("char", CharTokenizer, capabilities={"unk": True, "hf_format": False})
    registry.tokenizer("word", WordTokenizer, capabilities={"unk": True, "hf_format": False})
    registry.tokenizer("bpe", BPETokenizer, capabilities={"unk": False, "hf_format": True})
    registry.tokenizer("file", from_file, capabilities={"hf_format": True})
