"""gin glue: every registered plugin is a gin configurable in its family's module.

A gin file selects plugins by reference (`GPT.attention = @attention.sdpa()`) and sets their
parameters (`rope.base = 10000`). Errors from gin are turned into one-paragraph messages that
name the file, the line or the binding, and what would be valid.
"""

from __future__ import annotations

import ast
import contextlib
import difflib
import inspect
import re
import tokenize
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gin
import gin.config

import nima.train.settings  # noqa: F401  registers the core configurable `train` with gin
from nima import validation
from nima.errors import ConfigError, NimaError, UnknownPluginError
from nima.hooks import PluginSystem
from nima.registry import FAMILIES, unknown_name_message

_REFERENCE = re.compile(r"@([A-Za-z_][\w.]*)")
_INCLUDE = re.compile(r"^\s*include\s+['\"]([^'\"]+)['\"]", re.MULTILINE)
_NO_PARAMETER = re.compile(r"Configurable '([\w.]+)' doesn't have a parameter named '(\w+)'")
_NO_CONFIGURABLE = re.compile(r"No configurable matching (?:reference )?'@?([\w.]+)")
_AMBIGUOUS = re.compile(r"Ambiguous selector '([\w.]+)', matches (\[.*?\])")
_GIN_CONTEXT = re.compile(r"\n  In (?:call to configurable|file|bindings string).*", re.DOTALL)
_IN_CONFIGURABLE = re.compile(r"In call to configurable '([\w.]+)'")
_GIN_FILE_LINE = re.compile(r'In file "([^"]+)", line (\d+)')
NIMA_PREFIX = "nima:"


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


def experiments_dir() -> Path:
    """NIMA's experiments/ folder, for `include 'nima:gpt.gin'` from a gin file anywhere (in a
    source checkout, which the README's editable install is; a wheel does not carry it)."""
    return Path(__file__).resolve().parent.parent / "experiments"


def resolve_include(name: str, including: Path | None) -> Path:
    """Where `include 'name'` reads from: beside the including file, else as an absolute path;
    `nima:NAME` is an experiment NIMA ships. Top-level files (no including file) are read from
    the current directory. The one rule for gin's parse and for NIMA's plugin-name scan."""
    if name.startswith(NIMA_PREFIX):
        return experiments_dir() / name.removeprefix(NIMA_PREFIX)
    path = Path(name)
    if path.is_absolute() or including is None:
        return path
    return including.parent / path


def _missing_include(name: str, including: Path | None) -> ConfigError:
    where = f"{including}: include {name!r}" if including else f"gin file {name!r}"
    return ConfigError(
        f"{where}: {resolve_include(name, including)} does not exist. An include is read beside "
        f"the including file, or from an absolute path; `include 'nima:gpt.gin'` reads an "
        f"experiment NIMA ships (in {experiments_dir()})."
    )


class _IncludeReader:
    """gin's file reader for one parse: remembers which file is open, so that an include in it
    resolves beside it (gin itself searches the current directory, then every search path)."""

    def __init__(self) -> None:
        self.open_files: list[Path] = []

    def _resolve(self, name: str) -> Path:
        return resolve_include(name, self.open_files[-1] if self.open_files else None)

    def exists(self, name: str) -> bool:
        if not self._resolve(name).is_file():
            raise _missing_include(name, self.open_files[-1] if self.open_files else None)
        return True

    @contextlib.contextmanager
    def read(self, name: str):
        path = self._resolve(name)
        self.open_files.append(path)
        try:
            with open(path, encoding="utf-8") as f:
                yield f
        finally:
            self.open_files.pop()


@contextlib.contextmanager
def _gin_reads_includes_beside_files():
    """For one parse: gin reads files only through `_IncludeReader`, with no search paths."""
    saved = gin.config._FILE_READERS[:], gin.config._LOCATION_PREFIXES[:]
    reader = _IncludeReader()
    gin.config._FILE_READERS[:] = [(reader.read, reader.exists)]
    gin.config._LOCATION_PREFIXES[:] = [""]
    try:
        yield
    finally:
        gin.config._FILE_READERS[:], gin.config._LOCATION_PREFIXES[:] = saved


Line = tuple[str, str]  # (where: "file:line" or "--bind", the text of the line)


def _gin_lines(files: Sequence[Path], bindings: Sequence[str]) -> list[Line]:
    """Every line gin will read, in the order it reads them: each file with its includes
    expanded in place (resolved as gin resolves them), then the --bind lines."""
    lines: list[Line] = []
    seen: set[Path] = set()

    def visit(path: Path) -> None:
        if path.resolve() in seen:  # gin would loop forever; read each file once here
            return
        seen.add(path.resolve())
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            lines.append((f"{path}:{lineno}", line))
            if match := _INCLUDE.match(line):
                include = resolve_include(match.group(1), path)
                if not include.is_file():
                    raise _missing_include(match.group(1), path)
                visit(include)

    for path in files:
        visit(path)
    return lines + [("--bind", line) for binding in bindings for line in binding.splitlines()]


def _check_plugin_references(lines: list[Line], system: PluginSystem) -> None:
    """An `@family.name` reference to an unregistered plugin: name family, suggestions, all names."""
    for where, line in lines:
        for ref in _REFERENCE.findall(line.split("#", 1)[0]):
            family, _, name = ref.partition(".")
            if family not in FAMILIES or not name:
                continue
            registry = system.registries[family]
            gin_names = {e.gin_name or e.name: e.name for e in registry.entries()}
            if name not in gin_names:
                raise UnknownPluginError(
                    f"{where}: `@{ref}`: " + unknown_name_message(family, name, sorted(gin_names))
                )


def _parameters_of(selector: str) -> list[str]:
    try:
        target = gin.config._REGISTRY.get_match(selector).wrapped
        return [
            p for p in inspect.signature(target).parameters if p not in ("self", "args", "kwargs")
        ]
    except (TypeError, ValueError, AttributeError):
        return []


def _gin_message(exc: BaseException) -> str:
    """An exception's own message, without the lines gin appends ("In call to configurable...")."""
    return _GIN_CONTEXT.sub("", str(exc)).strip()


def _without_gin_notes(exc: NimaError) -> NimaError:
    """The same NimaError with its own message: gin re-raises it as a subclass made on the fly
    whose message carries gin's notes, one such class per configurable it passed through."""
    cls = type(exc)
    while getattr(cls.__dict__.get("__init__"), "__module__", None) == "gin.utils":
        cls = cls.__mro__[1]
    message = _gin_message(exc)
    if (names := _IN_CONFIGURABLE.findall(str(exc))) and not message.startswith(names[0]):
        message = f"{names[0]}: {message}"  # the configurable being built, innermost first
    return cls(message)


def _explain(exc: Exception, where: str) -> str:
    """gin's error message, rewritten to say what is valid."""
    text = _gin_message(exc).split("\n")[0]
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
    if match := _AMBIGUOUS.search(text):
        name, matches = match.group(1), ast.literal_eval(match.group(2))
        return (
            f"{where}: {name!r} is the name of more than one configurable "
            f"({', '.join(sorted(matches))}); write the full name, e.g. "
            f"`{sorted(matches)[0]}.<parameter> = ...`."
        )
    return f"{where}: {text}"


def _binding_location(lines: list[Line], name: str, param: str) -> str:
    """Where `name.param` is set (the last line gin reads that sets it), or ""."""
    pattern = re.compile(rf"^\s*(?:[\w./]*[./])?{re.escape(name)}\.{re.escape(param)}\s*=")
    found = [where for where, line in lines if pattern.match(line)]
    return found[-1] if found else ""


def _resolve_macro(value: Any) -> Any:
    """The value a `%MACRO` stands for (macros may name macros)."""
    while isinstance(value, gin.config.ConfigurableReference) and value.selector == "gin.macro":
        value = gin.config._CONFIG.get(("/".join(value.scopes), "gin.macro"), {}).get("value")
    return value


def validate_bindings(lines: list[Line]) -> None:
    """Check every gin binding against its configurable's annotations (nima.validation)."""
    for (_scope, selector), params in gin.config._CONFIG.items():
        if selector == "gin.macro":
            continue
        configurable = gin.config._REGISTRY.get(selector)
        if configurable is None:
            continue
        hints = validation.type_hints(configurable.wrapped)
        for param, value in params.items():
            value = _resolve_macro(value)
            reason = validation.problem(value, hints.get(param, Any))
            if reason is None:
                continue
            binding = f"{configurable.name}.{param}"
            if reason == validation.MISMATCH:
                reason = f"{binding} takes {validation.describe(hints[param])}"
            where = _binding_location(lines, configurable.name, param) or "the config"
            raise ConfigError(f"{where}: `{binding} = {value!r}` is not valid: {reason}.")


@contextlib.contextmanager
def building():
    """Turn an error raised while gin builds configured objects into one ConfigError paragraph
    that names the configurable and its bound values (or, for a NimaError, drops gin's notes)."""
    try:
        yield
    except NimaError as exc:
        raise _without_gin_notes(exc) from None
    except Exception as exc:
        names = _IN_CONFIGURABLE.findall(str(exc))
        if not names:
            raise
        name = names[0]  # gin notes the innermost call first
        configurable = gin.config._REGISTRY.get_match(name)
        bound = gin.config._CONFIG.get(("", configurable.selector), {})
        values = ", ".join(f"{name}.{p} = {v!r}" for p, v in bound.items()) or "none (defaults)"
        raise ConfigError(
            f"Building {name} failed: {type(exc).__name__}: {_gin_message(exc)}. "
            f"Its bound parameters: {values}. Check them against its signature "
            f"{name}{inspect.signature(configurable.wrapped)}."
        ) from None


def parse(files: Sequence[str | Path], bindings: Sequence[str], system: PluginSystem) -> None:
    """Clear gin, register every plugin, parse `files` then `bindings` (--bind), and check
    every bound value. Nothing from an earlier parse (bindings, search paths) survives."""
    paths = [Path(f) for f in files]
    for path in paths:
        if not path.is_file():
            raise ConfigError(
                f"gin file {str(path)!r} does not exist. Experiments ship in experiments/ "
                f"(e.g. experiments/gpt.gin); a run directory's config.gin reproduces that run."
            )
    gin.clear_config()
    register_plugins_with_gin(system)
    lines = _gin_lines(paths, bindings)
    _check_plugin_references(lines, system)
    with _gin_reads_includes_beside_files():
        for path in paths:
            _parse_file(path)
    for binding in bindings:
        try:
            gin.parse_config(binding)
        except (SyntaxError, tokenize.TokenError) as exc:
            raise ConfigError(f"--bind {binding!r}: not a gin binding ({exc}).") from None
        except (ValueError, KeyError) as exc:
            raise ConfigError(_explain(exc, f"--bind {binding!r}")) from None
    validate_bindings(lines)


def _parse_file(path: Path) -> None:
    try:
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
    except NimaError as exc:
        raise _without_gin_notes(exc) from None
    except (ValueError, KeyError, OSError, ImportError) as exc:
        where = _GIN_FILE_LINE.search(str(exc))  # the included file and line gin was reading
        raise ConfigError(_explain(exc, f"{where[1]}:{where[2]}" if where else str(path))) from None
