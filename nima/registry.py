"""One registry per plugin family: register, get, list, and "did you mean" errors.

The core knows the families and their contracts, never the implementations: entries arrive
through the plugin manager (`nima.hooks`), from the built-in packages and third-party ones alike.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any

from nima.capability_types import validate as validate_capabilities
from nima.errors import PluginClashError, UnknownPluginError

FAMILIES: tuple[str, ...] = (
    "attention",
    "positional",
    "norm",
    "mlp",
    "tokenizer",
    "sampler",
    "strategy",
    "optimizer",
    "scheduler",
    "model",
    "objective",
    "dataset",
    "launcher",
    "logger",
)


@dataclass(frozen=True)
class Entry:
    """A registered plugin: `obj` is a class or factory; calling it builds the plugin instance."""

    family: str
    name: str
    obj: Any
    description: str
    package: str
    capabilities: dict[str, Any] = field(default_factory=dict)
    gin_name: str = ""  # the name gin knows it by, inside the family's module; defaults to `name`

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly view (for `nima plugins --json`)."""
        return {
            "family": self.family,
            "name": self.name,
            "gin_name": f"{self.family}.{self.gin_name or self.name}",
            "package": self.package,
            "description": self.description,
            "capabilities": _jsonable(self.capabilities),
        }


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, range):
        return f"{value.start}..{value.stop - 1}"
    if isinstance(value, (list, tuple, set, frozenset)):
        items = [_jsonable(v) for v in value]
        return sorted(items, key=str) if isinstance(value, (set, frozenset)) else items
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if callable(value):  # e.g. an attention plugin's `reference`: where to read it
        return f"{getattr(value, '__module__', '?')}.{getattr(value, '__qualname__', value)}"
    return str(value)


def _describe(obj: Any) -> str:
    doc = (getattr(obj, "__doc__", None) or "").strip()
    return doc.splitlines()[0] if doc else ""


class Registry:
    """The entries of one family, by name."""

    def __init__(self, family: str) -> None:
        self.family = family
        self._entries: dict[str, Entry] = {}

    def register(
        self,
        name: str,
        obj: Any,
        *,
        package: str,
        description: str | None = None,
        capabilities: dict[str, Any] | None = None,
        gin_name: str = "",
    ) -> Entry:
        """Add `obj` under `name`; a name already taken is an error naming both packages, and
        capabilities outside the family's declared type (nima.capability_types) are refused."""
        if not name.isidentifier():
            raise ValueError(f"{self.family} plugin name {name!r} must be a Python identifier")
        validate_capabilities(self.family, name, package, capabilities or {})
        if name in self._entries:
            other = self._entries[name]
            raise PluginClashError(
                f"{self.family} plugin {name!r} from package {package!r} clashes with the one "
                f"already registered by package {other.package!r}. Rename one of them, or disable "
                f"a package with NIMA_DISABLE_PLUGINS={package} (or --disable-plugins {package})."
            )
        entry = Entry(
            family=self.family,
            name=name,
            obj=obj,
            description=description or _describe(obj),
            package=package,
            capabilities=dict(capabilities or {}),
            gin_name=gin_name,
        )
        self._entries[name] = entry
        return entry

    def unregister(self, name: str) -> None:
        self._entries.pop(name, None)

    def entry(self, name: str) -> Entry:
        """The entry for `name`, or an error listing the closest and all registered names."""
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownPluginError(
                unknown_name_message(self.family, name, self.names())
            ) from None

    def get(self, name: str) -> Any:
        return self.entry(name).obj

    def names(self) -> list[str]:
        return sorted(self._entries)

    def entries(self) -> list[Entry]:
        return [self._entries[n] for n in self.names()]

    def find(self, obj_or_instance: Any) -> Entry | None:
        """The entry whose object is `obj_or_instance` or its class (to read an instance's capabilities).

        An exact class match wins over a base class, so a plugin subclassing another is found as
        itself.
        """
        entries = list(self._entries.values())
        for entry in entries:
            if obj_or_instance is entry.obj or type(obj_or_instance) is entry.obj:
                return entry
        for entry in entries:
            if isinstance(entry.obj, type) and isinstance(obj_or_instance, entry.obj):
                return entry
        return None

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __len__(self) -> int:
        return len(self._entries)


def unknown_name_message(family: str, name: str, names: list[str]) -> str:
    """The one-paragraph error for an unknown plugin name: closest matches, then all names."""
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    known = ", ".join(names) if names else "none (is a plugin package installed and enabled?)"
    return f"Unknown {family} plugin {name!r}.{hint} Registered {family} plugins: {known}."


class Registries:
    """All families' registries; the object behind `nima.get` and `nima.plugins`."""

    def __init__(self) -> None:
        self._by_family = {family: Registry(family) for family in FAMILIES}

    def __getitem__(self, family: str) -> Registry:
        try:
            return self._by_family[family]
        except KeyError:
            close = difflib.get_close_matches(family, FAMILIES, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise UnknownPluginError(
                f"Unknown plugin family {family!r}.{hint} Families: {', '.join(FAMILIES)}."
            ) from None

    def __iter__(self):
        return iter(self._by_family.values())

    def entries(self, family: str | None = None) -> list[Entry]:
        if family is not None:
            return self[family].entries()
        return [e for registry in self for e in registry.entries()]
