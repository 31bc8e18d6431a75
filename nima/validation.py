"""Check gin-bound values against the annotations of the configurable they are bound to.

One mechanism for every configurable, core or plugin: a parameter's type hint says what it
takes, `Annotated[int, Range(ge=1)]` adds bounds, `Literal["full", "batches"]` lists choices,
`Callable[..., X]` asks for a factory (`@family.name`) and a plugin contract such as
`Attention` for an instance (`@family.name()`). `config.parse` checks every binding this way
before anything is built or written, so a wrong value is one paragraph, never a traceback.
"""

from __future__ import annotations

import argparse
import collections.abc
import dataclasses
import functools
import inspect
import math
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gin.config import ConfigurableReference

from nima.errors import ConfigError


@dataclass(frozen=True)
class Range:
    """`Annotated` metadata: the bounds a number must lie within (None: unbounded)."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None

    def admits(self, value: float) -> bool:
        return math.isfinite(value) and not (
            (self.ge is not None and value < self.ge)
            or (self.gt is not None and value <= self.gt)
            or (self.le is not None and value > self.le)
            or (self.lt is not None and value >= self.lt)
        )

    def __str__(self) -> str:
        bounds = [(">=", self.ge), (">", self.gt), ("<=", self.le), ("<", self.lt)]
        return " and ".join(f"{op} {bound:g}" for op, bound in bounds if bound is not None)


def type_hints(target: Any) -> dict[str, Any]:
    """The parameter annotations of a function or class (its __init__), extras kept; {} if
    they cannot be resolved (a third-party plugin's odd annotations never break a run)."""
    try:
        if dataclasses.is_dataclass(target) or not inspect.isclass(target):
            return typing.get_type_hints(target, include_extras=True)
        return typing.get_type_hints(target.__init__, include_extras=True)
    except Exception:  # NameError, TypeError: annotations we cannot evaluate are not checked
        return {}


def describe(hint: Any) -> str:
    """What a hint admits, in words a gin user reads ("an int >= 1", "one of 'full', 'batches'")."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Annotated:
        ranges = [str(m) for m in args[1:] if isinstance(m, Range)]
        return " ".join([describe(args[0]), *ranges])
    if origin in (typing.Union, types.UnionType):
        return " or ".join(describe(a) for a in args)
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if hint is type(None):
        return "None"
    if hint is bool:
        return "True or False"
    if hint in (int, float, str):
        return {int: "an int", float: "a number", str: "a string"}[hint]
    if _is_factory(hint):
        return "a factory (`@family.name`, no parentheses)"
    if origin in (list, tuple, collections.abc.Sequence):
        inner = [a for a in args if a is not Ellipsis]
        if origin is tuple and Ellipsis not in args:
            return f"a list of {len(inner)}: " + ", ".join(describe(a) for a in inner)
        return "a list" + (f" of {describe(inner[0])}" if inner else "")
    if inspect.isclass(hint):
        return f"an instance (`@family.name()`, with parentheses) of {hint.__name__}"
    return str(hint)


def _is_factory(hint: Any) -> bool:
    return hint is collections.abc.Callable or typing.get_origin(hint) is collections.abc.Callable


MISMATCH = "mismatch"  # `problem`'s answer when the value is simply of another kind


def problem(value: Any, hint: Any) -> str | None:
    """Why `value` does not fit `hint`: None if it does (or the hint cannot be checked),
    MISMATCH if it is of another kind, else a sentence saying what to write instead."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any or hint is None:
        return None
    if origin is typing.Annotated:
        if reason := problem(value, args[0]):
            return reason
        for meta in args[1:]:
            if isinstance(meta, Range) and _is_number(value) and not meta.admits(value):
                return f"it must be {meta}"
        return None
    if origin in (typing.Union, types.UnionType):
        reasons = [problem(value, a) for a in args]
        if None in reasons:
            return None
        specific = [r for r in reasons if r != MISMATCH]  # matched an arm's kind, not its rules
        return specific[0] if specific else MISMATCH
    if isinstance(value, ConfigurableReference):
        return _reference_problem(value, hint)
    if origin is typing.Literal:
        return None if value in args else MISMATCH
    if hint is type(None):
        return None if value is None else MISMATCH
    if hint is bool:
        return None if isinstance(value, bool) else MISMATCH
    if hint is int:
        return None if isinstance(value, int) and not isinstance(value, bool) else MISMATCH
    if hint is float:
        if not _is_number(value):
            return MISMATCH
        return None if math.isfinite(value) else "it must be a finite number"
    if hint is str:
        return None if isinstance(value, str) else MISMATCH
    if origin in (list, tuple, collections.abc.Sequence):
        return _sequence_problem(value, origin, args)
    if _is_factory(hint):
        return None if callable(value) else MISMATCH
    if inspect.isclass(hint):
        return None if _is_instance(value, hint) else MISMATCH
    return None


def _is_instance(value: Any, cls: type) -> bool:
    """isinstance, where a plain Protocol (no runtime check) admits anything."""
    try:
        return isinstance(value, cls)
    except TypeError:
        return True


def _sequence_problem(value: Any, origin: Any, args: tuple) -> str | None:
    if not isinstance(value, (list, tuple)):
        return MISMATCH
    inner = [a for a in args if a is not Ellipsis]
    if origin is tuple and Ellipsis not in args and len(inner) != len(value):
        return MISMATCH
    for i, item in enumerate(value):
        item_hint = inner[min(i, len(inner) - 1)] if inner else Any
        reason = problem(item, item_hint)
        if reason == MISMATCH:
            return f"item {i}, {item!r}, is not {describe(item_hint)}"
        if reason:
            return f"item {i}: {reason}"
    return None


def _reference_problem(ref: ConfigurableReference, hint: Any) -> str | None:
    """An `@name` (factory) where an instance is taken, or an `@name()` where a factory is."""
    written = f"@{ref.selector}"
    if hint is type(None):
        return "it takes None"
    if _is_factory(hint):
        if not ref.evaluate:
            return None
        return (
            f"{written}() is an instance, but this parameter takes a factory that its caller "
            f"builds with its own arguments: write {written} (no parentheses)"
        )
    if ref.evaluate:  # what a call returns is only known once it is built
        return None
    if inspect.isclass(hint) and hint not in (bool, int, float, str):
        return (
            f"{written} is the plugin itself, but this parameter takes an instance: write "
            f"{written}() (with parentheses; gin builds it with its bound parameters)"
        )
    return MISMATCH


def check_arguments(target: Any, arguments: dict[str, Any]) -> None:
    """Raise ConfigError for the first argument that does not fit `target`'s annotations."""
    hints = type_hints(target)
    for name, value in arguments.items():
        reason = problem(value, hints.get(name, Any))
        if reason is None:
            continue
        call = f"{getattr(target, '__qualname__', target)}({name}={value!r})"
        if reason == MISMATCH:
            reason = f"{name} takes {describe(hints[name])}"
        raise ConfigError(f"{call} is not valid: {reason}.")


def cli_type(hint: Any) -> Callable[[str], Any]:
    """An argparse `type=` for a command-line option annotated like a gin parameter:
    `cli_type(Annotated[int, Range(ge=1)])` parses an int and refuses 0 with "an int >= 1"."""
    base = typing.get_args(hint)[0] if typing.get_origin(hint) is typing.Annotated else hint

    def parse(text: str) -> Any:
        try:
            value = base(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {describe(hint)}") from None
        if problem(value, hint) is not None:
            raise argparse.ArgumentTypeError(f"{text} is not {describe(hint)}")
        return value

    parse.__name__ = describe(hint)  # argparse names the type in its messages
    return parse


def checked(cls: type) -> type:
    """Class decorator: every construction checks its arguments against the annotations, so
    Python callers get the same one-paragraph errors as gin files (which `config.parse` checks
    before building)."""
    init = cls.__init__

    @functools.wraps(init)
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        bound = inspect.signature(init).bind(self, *args, **kwargs)
        check_arguments(cls, {k: v for k, v in bound.arguments.items() if k != "self"})
        init(self, *args, **kwargs)

    cls.__init__ = __init__
    return cls


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
