"""Capability checks: a config asking a plugin for what it lacks fails before training starts.

Declared capabilities (all optional) an attention plugin may carry:
    backward: bool              it has a gradient
    dtypes: list[str]           e.g. ["float32", "float16", "bfloat16", "float64"]
    devices: list[str]          e.g. ["cpu", "cuda"]
    head_dims: list[int] | None None means any head dimension
The check names the registered plugins that do have what was asked for. No silent fallback.
"""

from __future__ import annotations

from typing import Any

from nima.errors import CapabilityError
from nima.registry import Entry, Registry


def lacks(entry: Entry, needs: dict[str, Any]) -> list[str]:
    """What of `needs` (backward, dtype, device, head_dim) the entry does not declare."""
    caps = entry.capabilities
    missing = []
    if needs.get("backward") and not caps.get("backward", False):
        missing.append("backward")
    for need, declared in (("dtype", "dtypes"), ("device", "devices"), ("head_dim", "head_dims")):
        if need in needs and caps.get(declared) is not None and needs[need] not in caps[declared]:
            missing.append(f"{need}={needs[need]}")
    return missing


def require(registry: Registry, entry: Entry, **needs: Any) -> None:
    """Raise CapabilityError if `entry` lacks any of `needs`, naming plugins that have them."""
    missing = lacks(entry, needs)
    if not missing:
        return
    able = [e.name for e in registry.entries() if e is not entry and not lacks(e, needs)]
    alternatives = (
        f" Plugins that support it: {', '.join(able)}." if able else " No registered plugin does."
    )
    raise CapabilityError(
        f"{registry.family} plugin {entry.name!r} (package {entry.package!r}) does not support "
        f"{', '.join(missing)}; it declares {entry.capabilities}.{alternatives}"
    )
