"""techqa: technical question/answer pairs built offline from the Python standard library's docs.

Each public module, class and function of a fixed list of stdlib modules gives one sample:
"What does `json.dumps` do?" -> the first paragraph of its docstring. No network, no files:
the same Python version always builds the same samples (the checksum covers their content).
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import json
from collections.abc import Sequence

from nima.data.splits import check_fractions, split_samples

MODULES = (
    "abc", "argparse", "base64", "bisect", "calendar", "collections", "colorsys", "configparser",
    "contextlib", "copy", "csv", "dataclasses", "datetime", "decimal", "difflib", "enum",
    "fnmatch", "fractions", "functools", "glob", "gzip", "hashlib", "heapq", "hmac", "html",
    "inspect", "io", "ipaddress", "itertools", "json", "logging", "math", "operator", "os",
    "pathlib", "pprint", "queue", "random", "re", "sched", "secrets", "shlex", "shutil",
    "statistics", "string", "struct", "tempfile", "textwrap", "threading", "time", "timeit",
    "traceback", "urllib.parse", "uuid", "zipfile", "zlib",
)  # fmt: skip
MIN_ANSWER, MAX_ANSWER = 20, 800  # characters: skip stubs and whole manuals


def _first_paragraph(doc: str | None, name: str) -> str:
    """The docstring's first paragraph, past C-style signature lines such as "time() -> float"."""
    for paragraph in inspect.cleandoc(doc or "").split("\n\n"):
        if not paragraph.startswith(f"{name}("):
            return " ".join(paragraph.split())
    return ""


def build_samples(modules: Sequence[str] = MODULES) -> list[dict[str, str]]:
    """Every (question, answer) pair, in a fixed order: modules as listed, members by name."""
    samples = []

    def add(question: str, doc: str | None, name: str = "") -> None:
        answer = _first_paragraph(doc, name or "\0")
        if MIN_ANSWER <= len(answer) <= MAX_ANSWER:
            samples.append({"question": question, "answer": answer})

    for name in modules:
        try:
            module = importlib.import_module(name)
        except ImportError:  # a stdlib module this Python build lacks
            continue
        add(f"What is the Python module `{name}` for?", module.__doc__)
        for member, obj in sorted(vars(module).items()):
            if member.startswith("_") or getattr(obj, "__module__", None) not in (
                name,
                module.__name__,
            ):
                continue
            if inspect.isclass(obj):
                add(f"What is the class `{name}.{member}`?", obj.__doc__, member)
            elif callable(obj):
                add(f"What does `{name}.{member}` do?", obj.__doc__, member)
    return samples


def format_sample(sample: dict[str, str]) -> str:
    return f"Question: {sample['question']}\nAnswer: {sample['answer']}\n\n"


class TechQA:
    """Technical Q&A from Python stdlib docstrings: offline, deterministic, question/answer kept apart."""

    def __init__(self, fractions: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0) -> None:
        self.fractions = check_fractions(fractions, "techqa")
        self.seed = seed
        self._samples: dict[str, list[dict[str, str]]] | None = None

    def samples(self) -> dict[str, list[dict[str, str]]]:
        """Samples per split, each {"question": ..., "answer": ...} (for encoder-decoder models)."""
        if self._samples is None:
            self._samples = split_samples(build_samples(), self.fractions, self.seed, "techqa")
        return self._samples

    def splits(self) -> dict[str, str]:
        """Each split as text: "Question: ...\\nAnswer: ...\\n\\n" per sample (for language models)."""
        return {name: "".join(map(format_sample, s)) for name, s in self.samples().items()}

    def checksum(self) -> str:
        blob = json.dumps([self.samples(), self.fractions, self.seed], sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()
