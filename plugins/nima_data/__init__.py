"""Built-in NIMA datasets, registered through the `nima` entry-point group."""

from nima import hookimpl
from nima_data.techqa import TechQA
from nima_data.text import Shakespeare, ShakespeareChar, TextFile


@hookimpl
def nima_register(registry) -> None:
    """Register the built-in datasets."""
    registry.dataset("shakespeare_char", ShakespeareChar)
    registry.dataset("shakespeare", Shakespeare)
    registry.dataset("text_file", TextFile)
    registry.dataset("techqa", TechQA)
