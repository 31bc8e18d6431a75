"""The plugin manager: pluggy hooks plus guarded, one-at-a-time loading of the `nima` entry points.

pluggy's own `load_setuptools_entrypoints` lets one broken package abort all loading; here each
entry point is imported and registered on its own, and a failure is reported and skipped.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from importlib import metadata
from typing import Any

import pluggy

from nima import hookspecs
from nima.errors import NimaError
from nima.registry import FAMILIES, Entry, Registries

ENTRY_POINT_GROUP = "nima"
DISABLE_ENV = "NIMA_DISABLE_PLUGINS"


@dataclass(frozen=True)
class LoadFailure:
    """A plugin package that could not be loaded or registered, and why."""

    package: str
    entry_point: str
    error: str

    def __str__(self) -> str:
        return f"plugin package {self.package!r} (entry point {self.entry_point}) skipped: {self.error}"


class Registrar:
    """What a package's `nima_register` hook receives: `registry.<family>(name, obj, ...)`.

    It stamps every entry with the registering package and remembers what it added, so a
    package that fails half-way is rolled back as a whole.
    """

    def __init__(self, registries: Registries, package: str) -> None:
        self._registries = registries
        self.package = package
        self.added: list[Entry] = []

    def add(self, family: str, name: str, obj: Any, **kwargs: Any) -> Any:
        """Register `obj` as `family.name`; returns `obj` so it can serve as a decorator body."""
        entry = self._registries[family].register(name, obj, package=self.package, **kwargs)
        self.added.append(entry)
        return obj

    def __getattr__(self, family: str):
        if family not in FAMILIES:
            raise AttributeError(f"no plugin family {family!r}; families: {', '.join(FAMILIES)}")
        return lambda name, obj, **kwargs: self.add(family, name, obj, **kwargs)

    def rollback(self) -> None:
        for entry in self.added:
            self._registries[entry.family].unregister(entry.name)
        self.added.clear()


def disabled_from_env() -> set[str]:
    raw = os.environ.get(DISABLE_ENV, "")
    return {p.strip() for p in raw.split(",") if p.strip()}


class PluginSystem:
    """A pluggy manager and the registries it fills. `nima.plugins()` uses a process-wide one."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager("nima")
        self.pm.add_hookspecs(hookspecs)
        self.registries = Registries()
        self.failures: list[LoadFailure] = []
        self.packages: dict[str, str] = {}  # loaded distribution -> version (for run.json)

    @property
    def hook(self):
        return self.pm.hook

    def add_plugin(self, plugin: Any, package: str, name: str | None = None) -> None:
        """Register a module or object implementing hooks and run its `nima_register`, atomically."""
        name = name or package
        self.pm.register(plugin, name=name)
        registrar = Registrar(self.registries, package)
        others = [p for p in self.pm.get_plugins() if p is not plugin]
        try:
            self.pm.subset_hook_caller("nima_register", remove_plugins=others)(registry=registrar)
        except BaseException:
            registrar.rollback()
            self.pm.unregister(plugin)
            raise

    def load_entry_points(self, disabled: set[str] | None = None) -> None:
        """Load each `nima` entry point on its own; report and skip any that fails."""
        disabled = disabled_from_env() | set(disabled or ())
        for ep in sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=_ep_sort_key):
            package = ep.dist.name if ep.dist is not None else ep.value.split(".")[0]
            module = ep.value.split(":")[0].split(".")[0]
            if disabled & {package, module}:  # entry-point names need not be unique
                continue
            label = f"{ep.name} = {ep.value}"
            if self.pm.has_plugin(f"{package}:{ep.name}"):
                continue  # the same distribution seen twice on sys.path
            try:
                plugin = ep.load()
                self.add_plugin(plugin, package=package, name=f"{package}:{ep.name}")
                self.packages[package] = ep.dist.version if ep.dist is not None else "unknown"
            except Exception as exc:  # a broken third-party package must not take NIMA down
                message = str(exc) if isinstance(exc, NimaError) else f"{type(exc).__name__}: {exc}"
                self.failures.append(LoadFailure(package, label, " ".join(message.split())))


def _ep_sort_key(ep: metadata.EntryPoint) -> tuple[int, str, str]:
    # The built-ins (distribution "nima") first, so a clash names the third-party package.
    dist = ep.dist.name if ep.dist is not None else ""
    return (dist != "nima", dist, ep.name)


_system: PluginSystem | None = None


def system() -> PluginSystem:
    """The process-wide plugin system, loading entry points on first use."""
    global _system
    if _system is None:
        _system = PluginSystem()
        _system.load_entry_points()
    return _system


def for_command(disable_plugins: str | None) -> PluginSystem:
    """A fresh process-wide system for a CLI command, with its --disable-plugins; warns of failures."""
    disabled = {p.strip() for p in (disable_plugins or "").split(",") if p.strip()}
    fresh = reset(disabled=disabled)
    for failure in fresh.failures:
        print(f"warning: {failure}", file=sys.stderr)
    return fresh


def reset(*, load: bool = True, disabled: set[str] | None = None) -> PluginSystem:
    """Start a fresh process-wide plugin system (the CLI's --disable-plugins; tests)."""
    global _system
    _system = PluginSystem()
    if load:
        _system.load_entry_points(disabled)
    return _system
