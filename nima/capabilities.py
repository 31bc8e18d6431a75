"""Capability checks: a config asking a plugin for what it lacks fails before training starts.

What a plugin may declare, family by family, is typed in nima.capability_types (and tabled in
docs/writing-plugins.md). `check_model` applies it to every plugin a model runs, each layer's
own, before training; the check names the registered plugins that do have what was asked for.
No silent fallback.

A declared capability that `nima check` found failing is not trusted: the check records its
verdicts per plugin, package version and device (`$NIMA_CACHE_DIR/check/verdicts.json`), and
NIMA refuses what failed there (a dtype, backward, bias, a head dim; a broken property such as
causal masking or a tokenizer's round trip refuses the plugin outright) until the plugin passes
`nima check` again or its package version changes: `nima run` for the model's plugins, its
tokenizer and its samplers; loading a finished run (generate, chat, nima.load, attention maps,
fill, HF export: nima.runs.load.load_run) for the model's plugins and its tokenizer.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import os
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path
from typing import Any

from nima.errors import CapabilityError
from nima.registry import Entry, Registries, Registry

TRITON_INTERPRETER: dict[str, str] = {
    "cpu": "set TRITON_INTERPRET=1 in the environment before triton is first imported "
    "(Triton's interpreter: correct, slow)"
}
"""The `interpreter` capability of a Triton kernel: CPU tensors through Triton's interpreter."""


def lacks(entry: Entry, needs: dict[str, Any]) -> list[str]:
    """What of `needs` (backward, dtype, device, head_dim) the entry does not declare."""
    caps = entry.capabilities
    missing = []
    for feature in ("backward", "bias"):  # absent means not supported
        if needs.get(feature) and not caps.get(feature, False):
            missing.append(feature)
    for need, declared in (("dtype", "dtypes"), ("device", "devices"), ("head_dim", "head_dims")):
        if need in needs and caps.get(declared) is not None and needs[need] not in caps[declared]:
            missing.append(f"{need}={needs[need]}")
    per_device = (caps.get("dtypes_by_device") or {}).get(needs.get("device"))
    narrowed_out = per_device is not None and needs.get("dtype") not in per_device
    if "dtype" in needs and narrowed_out and f"dtype={needs['dtype']}" not in missing:
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


def describe(caps: dict[str, Any]) -> str:
    """The checked capabilities as a phrase: 'forward and backward; devices cuda; head dims 1..256'.

    `backward` is always described (absent means no backward); the others when declared.
    """
    parts = ["forward and backward" if caps.get("backward") else "forward only (no backward)"]
    devices = caps.get("devices")
    if "devices" in caps:
        parts.append("any device" if devices is None else f"devices {_join(devices) or 'none'}")
    if "dtypes" in caps or "dtypes_by_device" in caps:
        dtypes = caps.get("dtypes")
        narrowed = [
            f"{device}: {_join(only)}"
            for device, only in (caps.get("dtypes_by_device") or {}).items()
            if (devices is None or device in devices) and (dtypes is None or only != dtypes)
        ]
        text = "any dtype" if dtypes is None else f"dtypes {_join(dtypes)}"
        parts.append(f"{text} ({'; '.join(narrowed)})" if narrowed else text)
    if "head_dims" in caps:
        head_dims = caps["head_dims"]
        parts.append("any head dim" if head_dims is None else f"head dims {_span(head_dims)}")
    if "bias" in caps:
        parts.append("an additive bias" if caps["bias"] else "no additive bias")
    return "; ".join(parts)


def _join(items: Iterable[Any]) -> str:
    return ", ".join(map(str, items))


def _span(values: Iterable[int]) -> str:
    """'1..256' for a range (or any run of consecutive ints), else the values listed."""
    values = list(values)
    consecutive = len(values) > 2 and values == list(range(values[0], values[-1] + 1))
    return f"{values[0]}..{values[-1]}" if consecutive else _join(values) or "none"


def interpreter_hint(entry: Entry, device: str | None) -> str | None:
    """How to reach `device` through the interpreter the entry declares, if it declares one."""
    return (entry.capabilities.get("interpreter") or {}).get(device)


def verdicts_path() -> Path:
    """Where `nima check` keeps the capabilities it found failing: $NIMA_CACHE_DIR/check."""
    root = Path(os.environ.get("NIMA_CACHE_DIR", Path.home() / ".cache" / "nima"))
    return root / "check" / "verdicts.json"


def package_version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "unknown"


def verdict_key(entry: Entry, device: str) -> str:
    """'attention.softcap nima-example==0.1.0 cpu': a verdict holds for one version on one device."""
    return f"{entry.family}.{entry.name} {entry.package}=={package_version(entry.package)} {device}"


def failing_checks(entry: Entry, device: str | None) -> dict[str, str]:
    """The capabilities `nima check` last found failing for this plugin version on `device`
    ({capability: message}); empty when never checked, or checked and passing."""
    try:
        verdicts = json.loads(verdicts_path().read_text())
    except (OSError, ValueError):
        return {}
    found = verdicts.get(verdict_key(entry, device or "cpu"), {})
    return found if isinstance(found, dict) else {}


# Failing checks that refuse one need only; any other failing check is a broken property of the
# contract (causal masking, GQA, a round trip...) and refuses the plugin for every use.
_NEED_OF_CHECK = {"backward": "backward", "bias": "bias", "head_dims": "head_dim"}
_DTYPES = ("float32", "float64", "float16", "bfloat16")


def distrusted(entry: Entry, needs: dict[str, Any]) -> list[str]:
    """What of `needs` `nima check` found failing, as 'causal (nima check: failing)'."""
    found = []
    for capability in failing_checks(entry, needs.get("device")):
        if capability in _DTYPES:
            applies = needs.get("dtype") == capability
        elif capability in _NEED_OF_CHECK:
            applies = bool(needs.get(_NEED_OF_CHECK[capability]))
        else:
            applies = True
        if applies:
            found.append(f"{capability} (declared, but failing in nima check)")
    return found


def require_trusted(registry: Registry, entry: Entry, **needs: Any) -> None:
    """Raise CapabilityError if `nima check` found what of `needs` the entry is used for failing."""
    untrusted = distrusted(entry, needs)
    if untrusted:
        raise CapabilityError(
            f"{registry.family} plugin {entry.name!r} (package {entry.package!r}) is not trusted "
            f"for this run: {', '.join(untrusted)} on {needs.get('device', 'cpu')}. Fix it and "
            f"run `nima check {registry.family}.{entry.name}` again (verdicts are kept per "
            f"package version in {verdicts_path()}), or choose another {registry.family} plugin."
        )


def check_trusted(registries: Registries, plugins: Iterable[tuple[str, Any]], device: str) -> None:
    """Raise CapabilityError if `nima check` found any of these (family, instance or factory)
    plugins failing on `device`: the tokenizer, samplers... a run uses beside its model."""
    for family, instance in plugins:
        registry = registries[family]
        entry = registry.find(inspect.unwrap(instance))  # a factory as gin wraps it, or an instance
        if entry is not None:  # built in Python, not registered: nothing was checked
            require_trusted(registry, entry, device=device)


def require(registry: Registry, entry: Entry, **needs: Any) -> None:
    """Raise CapabilityError if `entry` lacks any of `needs`, naming plugins that have them, or
    if `nima check` found what is needed failing."""
    missing = lacks(entry, needs)
    if not missing:
        require_trusted(registry, entry, **needs)
        return
    asked = ", ".join(f"{k}={v}" if v is not True else k for k, v in needs.items())
    able = [e.name for e in registry.entries() if e is not entry and not lacks(e, needs)]
    alternatives = (
        f"Plugins that support {asked}: {', '.join(able)}."
        if able
        else f"No registered {registry.family} plugin supports {asked}."
    )
    hint = interpreter_hint(entry, needs.get("device"))
    via = ""
    if hint and f"device={needs['device']}" in missing:
        via = f" On {needs['device']} it runs only through an interpreter: {hint}."
    raise CapabilityError(
        f"{registry.family} plugin {entry.name!r} (package {entry.package!r}) does not support "
        f"{', '.join(missing)}. It supports {describe(entry.capabilities)}.{via} {alternatives}"
    )


def check_model(
    model: Any,
    registries: Registries,
    *,
    device: str,
    dtype: str,
    training: bool = True,
    verdicts_only: bool = False,
) -> None:
    """Raise CapabilityError if any plugin the model runs lacks what this run needs (with
    `verdicts_only`, only if `nima check` found it failing: a finished run being loaded).

    The model lists its plugins as (family, instance) pairs, every layer's own
    (`model.plugins()`, as GPT does). Each registered one must support the device and the compute
    dtype (autocast's, not only the parameters'), and backward when training; attention plugins
    also the model's head_dim, and an additive bias when a positional plugin acts on the bias.
    An instance no registry knows (built in Python, not registered) declares nothing to check.
    """
    listing = getattr(model, "plugins", None)
    if not callable(listing):
        raise CapabilityError(
            f"The model {type(model).__name__} does not list its plugins, so their capabilities "
            "cannot be checked before training: give it a `plugins()` method yielding "
            "(family, instance) for each plugin instance it runs, every layer's own, as "
            "nima.models.gpt.GPT.plugins does."
        )
    found = []
    for family, instance in listing():
        registry = registries[family]
        entry = registry.find(instance)
        if entry is not None and all(entry is not e for _, e in found):
            found.append((registry, entry))
    needs_bias = any(
        "bias" in (entry.capabilities.get("acts_on") or [])
        for registry, entry in found
        if registry.family == "positional"
    )
    for registry, entry in found:
        needs: dict[str, Any] = {"device": device, "dtype": dtype}
        if training:
            needs = {"backward": True, **needs}
        if registry.family == "attention":
            if hasattr(model, "head_dim"):
                needs["head_dim"] = model.head_dim
            if needs_bias:
                needs["bias"] = True
        (require_trusted if verdicts_only else require)(registry, entry, **needs)
