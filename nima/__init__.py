"""NIMA: build, train and study GPT-style language models; every interchangeable part is a plugin.

import nima
attn = nima.get("attention", "sdpa")()      # build an instance with its defaults
nima.plugins("positional")                  # list registered entries
m = nima.load("runs/gpt-...")               # a trained run: m.generate(...), m.stream(...)
"""

from __future__ import annotations

from typing import Any

from nima.errors import NimaError
from nima.hookspecs import hookimpl
from nima.registry import FAMILIES, Entry

__version__ = "0.1.0"
__all__ = ["FAMILIES", "Entry", "NimaError", "get", "hookimpl", "plugins", "entry", "load"]


def get(family: str, name: str) -> Any:
    """The registered class or factory `family.name`; call it to build the plugin instance."""
    from nima.hooks import system

    return system().registries[family].get(name)


def entry(family: str, name: str) -> Entry:
    """The full registry entry (description, package, capabilities) of `family.name`."""
    from nima.hooks import system

    return system().registries[family].entry(name)


def plugins(family: str | None = None) -> list[Entry]:
    """Registered entries, of one family or all, sorted by family then name."""
    from nima.hooks import system

    return system().registries.entries(family)


def load(run_dir: Any, checkpoint: str = "best", device: str | None = None) -> Any:
    """A finished run as a LanguageModel (nima.generate.api): `.generate(prompts, ...)` and
    `.stream(prompt, ...)`; checkpoint "best" or "last"; device as `nima run --device`."""
    from nima.generate.from_run import load as load_run

    return load_run(run_dir, checkpoint, device)
