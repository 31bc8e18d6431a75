"""Built-in NIMA tokenizer plugins, registered through the `nima` entry-point group."""

from nima import hookimpl
from nima_tokenizers.base import SPECIAL_TOKENS, Tokenizer
from nima_tokenizers.char import CharTokenizer

__all__ = ["SPECIAL_TOKENS", "CharTokenizer", "Tokenizer"]


@hookimpl
def nima_register(registry) -> None:
    """Register the built-in tokenizer plugins."""
    registry.tokenizer("char", CharTokenizer, capabilities={"unk": True, "byte_fallback": False})
