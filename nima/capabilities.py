"""Capability checks: a config asking a plugin for what it lacks fails before training starts.

Declared capabilities (all optional) an attention plugin may carry:
    backward: bool              it has a gradient
    dtypes: list[str]           e.g. ["float32", "float16", "bfloat16", "float64"]
    devices: list[str]          e.g. ["cpu", "cuda"]
    head_dims: list[int] | None None means any head dimension
    dtypes_by_device: {device: [dtype, ...]}   narrows `dtypes` per device (e.g. no bf16 on the
                                Triton CPU interpreter)
The check names the registered plugins that do have what was asked for. No silent fallback.
"""

from __future__ import annotations

import importlib.util
import os
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
    per_device = (caps.get("dtypes_by_device") or {}).get(needs.get("device"))
    if "dtype" in needs and per_device is not None and needs["dtype"] not in per_device:
        missing.append(f"dtype={needs['dtype']} on {needs['device']}")
    return missing


def triton_interpreter() -> bool:
    """TRITON_INTERPRET as Triton reads it: Triton kernels then run on CPU tensors."""
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes", "y")


def triton_devices() -> list[str]:
    """Where a Triton kernel can run: CUDA, plus the CPU under TRITON_INTERPRET=1."""
    if importlib.util.find_spec("triton") is None:
        return []
    return ["cuda", "cpu"] if triton_interpreter() else ["cuda"]


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
