"""gin glue: every registered plugin is a gin configurable in its family's module.

A gin file selects plugins by reference (`GPT.attention = @attention.sdpa()`) and sets their
parameters (`rope.base = 10000`). Errors from gin are turned into one-paragraph messages that
name the file, the line or the binding, and what would be valid.
"""

from __future__ import annotations

import contextlib
import difflib
import inspect
import logging
import re
import tokenize
from collections.abc import Sequence
from pathlib import Path

import gin
import gin.config

from nima.errors import ConfigError, UnknownPluginError
from nima.hooks import PluginSystem
from nima.registry import FAMILIES, unknown_name_message

_REFERENCE = re.compile(r"@([A-Za-z_][\w.]*)")
_INCLUDE = re.compile(r"^\s*include\s+['\"]([^'\"]+)['\"]", re.MULTILINE)
_NO_PARAMETER = re.compile(r"Configurable '([\w.]+)' doesn't have a parameter named '(\w+)'")
_NO_CONFIGURABLE = re.compile(r"No configurable matching (?:reference )?'@?([\w.]+)")


def register_plugins_with_gin(system: PluginSystem) -> None:
    """Make each registry entry a gin configurable `<family>.<name>` (the object stays unchanged)."""
    for entry in system.registries.entries():
        name = entry.gin_name or entry.name
        selector = f"{entry.family}.{name}"
        known = gin.config._REGISTRY.get(selector)
        if known is not None and known.wrapped is entry.obj:
            continue
        with gin.config.interactive_mode():  # a fresh plugin system may re-register a name
            gin.register(name, module=entry.family)(entry.obj)


def _gin_sources(files: Sequence[Path]) -> list[tuple[str, str]]:
    """(label, text) of each gin file and the files it includes, for reference checks."""
    sources, todo, seen = [], list(files), set()
    while todo:
        path = Path(todo.pop())
        if path.resolve() in seen or not path.is_file():
            continue
        seen.add(path.resolve())
        text = path.read_text()
        sources.append((str(path), text))
        for include in _INCLUDE.findall(text):  # beside the including file, else as given
            beside = path.parent / include
            todo.append(beside if beside.is_file() else Path(include))
    return sources


def _check_plugin_references(sources: list[tuple[str, str]], system: PluginSystem) -> None:
    """An `@family.name` reference to an unregistered plugin: name family, suggestions, all names."""
    for label, text in sources:
        for lineno, line in enumerate(text.splitlines(), start=1):
            for ref in _REFERENCE.findall(line.split("#", 1)[0]):
                family, _, name = ref.partition(".")
                if family not in FAMILIES or not name:
                    continue
                registry = system.registries[family]
                gin_names = {e.gin_name or e.name: e.name for e in registry.entries()}
                if name not in gin_names:
                    raise UnknownPluginError(
                        f"{label}:{lineno}: `@{ref}`: "
                        + unknown_name_message(family, name, sorted(gin_names))
                    )


def _parameters_of(selector: str) -> list[str]:
    try:
        target = gin.config._REGISTRY.get_match(selector).wrapped
        return [
            p for p in inspect.signature(target).parameters if p not in ("self", "args", "kwargs")
        ]
    except (TypeError, ValueError, AttributeError):
        return []


def _explain(exc: Exception, where: str) -> str:
    """gin's error message, rewritten to say what is valid."""
    text = str(exc).split("\n")[0]
    if match := _NO_PARAMETER.search(text):
        selector, param = match.groups()
        params = _parameters_of(selector)
        close = difflib.get_close_matches(param, params, n=2)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        return (
            f"{where}: {selector} has no parameter {param!r}.{hint} "
            f"Its parameters: {', '.join(params) or 'unknown'}."
        )
    if match := _NO_CONFIGURABLE.search(text):
        selector = match.group(1)
        names = sorted(selector for selector, _ in gin.config._REGISTRY.items())
        close = difflib.get_close_matches(selector, names, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        return (
            f"{where}: nothing configurable is called {selector!r}.{hint} "
            f"`nima plugins` lists the plugins; core names are train and GPT's parameters."
        )
    return f"{where}: {text}"


@contextlib.contextmanager
def _quiet_gin():
    """gin logs "Path not found" for each include it resolves through a search path."""
    logging.disable(logging.ERROR)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


def parse(files: Sequence[str | Path], bindings: Sequence[str], system: PluginSystem) -> None:
    """Clear gin, register every plugin, then parse `files` followed by `bindings` (--bind)."""
    paths = [Path(f) for f in files]
    for path in paths:
        if not path.is_file():
            raise ConfigError(
                f"gin file {str(path)!r} does not exist. Experiments ship in experiments/ "
                f"(e.g. experiments/gpt.gin); a run directory's config.gin reproduces that run."
            )
    gin.clear_config()
    register_plugins_with_gin(system)
    sources = _gin_sources(paths)
    _check_plugin_references(sources + [("--bind", "\n".join(bindings))], system)
    for label, _ in sources:  # an include resolves relative to the file that includes it
        gin.add_config_file_search_path(str(Path(label).parent))
    for path in paths:
        try:
            with _quiet_gin():
                gin.parse_config_file(str(path))
        except SyntaxError as exc:
            raise ConfigError(
                f"{exc.filename or path}:{exc.lineno}: gin syntax error: {exc.msg}. "
                f"Lines look like `GPT.n_layers = 4` or `train.model = @GPT`."
            ) from None
        except tokenize.TokenError as exc:
            line = exc.args[1][0] if len(exc.args) > 1 else "?"
            raise ConfigError(
                f"{path}:{line}: gin syntax error: {exc.args[0]} (an unclosed bracket or quote?)"
            ) from None
        except (ValueError, OSError, ImportError) as exc:
            raise ConfigError(_explain(exc, str(path))) from None
    for binding in bindings:
        try:
            gin.parse_config(binding)
        except (SyntaxError, tokenize.TokenError) as exc:
            raise ConfigError(f"--bind {binding!r}: not a gin binding ({exc}).") from None
        except ValueError as exc:
            raise ConfigError(_explain(exc, f"--bind {binding!r}")) from None
