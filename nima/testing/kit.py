"""The conformance kit's engine: every contract check of every registered plugin, as data.

    from nima.testing.kit import collect, run_check
    for check in collect(nima.plugins(), device="cpu"):
        print(run_check(check))

A Check is one plugin x one capability (a dtype, a masking property, a tokenizer round trip...):
`declared` says whether the plugin claims it (its registered capabilities, or the family's
contract, which every plugin owes); `run` raises AssertionError naming the broken property.
`nima check` prints the results as a matrix; the pytest plugin (nima.testing.conformance) makes
each declared check one test.
"""

from __future__ import annotations

import inspect
import time
import traceback
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

# The status of a check, as the matrix shows it.
VERIFIED, FAILING, NOT_DECLARED, SKIPPED = "verified", "failing", "not declared", "skipped"


class Skip(Exception):
    """Raised by a check's run: the plugin cannot be checked on this machine (the message says
    why: it needs a path, data this machine lacks, a hook it does not implement)."""


ARGUMENTS_HINT = (
    "give the kit its constructor arguments with the `check_kwargs` capability, or "
    "conformance(..., kwargs={'family.name': {...}}) in your tests"
)


def build(factory: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """factory(*args, **kwargs), or Skip when it cannot be built here: a required argument
    nobody gave (see `maker`), or a NimaError (it needs a path, data or a file this machine
    lacks). Either is a configuration gap, not a broken contract, so never `failing`."""
    from nima.errors import NimaError

    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):  # a builtin or C factory: nothing to inspect
        signature = None
    try:
        given = signature.bind_partial(*args, **kwargs).arguments if signature else None
    except TypeError:  # it refuses the family's arguments: a broken contract, the call says how
        given = None
    if signature is not None and given is not None:
        required = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        missing = [
            p.name
            for p in signature.parameters.values()
            if p.kind in required and p.default is p.empty and p.name not in given
        ]
        if missing:
            raise Skip(f"cannot be built without {', '.join(missing)}: {ARGUMENTS_HINT}")
    try:
        return factory(*args, **kwargs)
    except NimaError as exc:
        raise Skip(f"cannot be built here: {' '.join(str(exc).split())}") from None


def maker(entry: Any) -> Callable[..., Any]:
    """The one way every family's checks build a plugin: build(entry.obj, **family arguments),
    the author's `check_kwargs` capability given on top."""
    given = entry.capabilities.get("check_kwargs") or {}

    def make(*args: Any, **kwargs: Any) -> Any:
        return build(entry.obj, *args, **{**kwargs, **given})

    return make


@dataclass(frozen=True)
class Check:
    """One capability of one plugin; `run()` raises AssertionError if the plugin breaks it."""

    family: str
    plugin: str
    capability: str  # the matrix column: "float16", "causal", "round_trip", ...
    what: str  # the property in words, for the failure message
    declared: bool = True
    run: Callable[[], Any] | None = None
    skip: str | None = None  # why it cannot run here (no such device, needs arguments, ...)
    package: str = ""

    @property
    def id(self) -> str:
        return f"{self.family}.{self.plugin}:{self.capability}"


@dataclass
class Result:
    check: Check
    status: str
    message: str = ""
    seconds: float = 0.0

    def __str__(self) -> str:
        tail = f": {self.message}" if self.message else ""
        return f"{self.check.id} {self.status}{tail}"


def failure_message(check: Check, error: BaseException) -> str:
    """The one-paragraph message of a broken property: plugin, property, what went wrong."""
    detail = " ".join(str(error).split()) or type(error).__name__
    if not isinstance(error, AssertionError):  # it crashed rather than computing a wrong value
        where = traceback.extract_tb(error.__traceback__)[-1]
        detail = f"raised {type(error).__name__}: {detail} (at {where.filename}:{where.lineno})"
    return f"{check.family}.{check.plugin} breaks {check.capability!r} ({check.what}): {detail}"


def run_check(check: Check) -> Result:
    """Run one check: verified, failing (with the message), not declared or skipped."""
    if not check.declared:
        return Result(check, NOT_DECLARED, check.skip or "")
    if check.skip is not None or check.run is None:
        return Result(check, SKIPPED, check.skip or "nothing to run")
    start = time.perf_counter()
    try:
        check.run()
    except Skip as why:
        return Result(check, SKIPPED, str(why), time.perf_counter() - start)
    except Exception as error:  # a crash is a failure of the property too
        return Result(check, FAILING, failure_message(check, error), time.perf_counter() - start)
    return Result(check, VERIFIED, "", time.perf_counter() - start)


def collect(
    entries: Iterable[Any],
    *,
    device: str = "cpu",
    kwargs: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[Check]:
    """Every check of every entry, in order (entries of families the kit has no checks for are
    left out). `kwargs` gives constructor arguments by "family.name", over `check_kwargs`."""
    family_checks = _family_checks()
    checks: list[Check] = []
    for entry in entries:
        given = (kwargs or {}).get(f"{entry.family}.{entry.name}")
        if given is not None:
            caps = entry.capabilities
            entry = replace(
                entry,
                capabilities={
                    **caps,
                    "check_kwargs": {**(caps.get("check_kwargs") or {}), **given},
                },
            )
        checks_of = family_checks.get(entry.family)
        if checks_of is not None:
            checks += [replace(c, package=entry.package) for c in checks_of(entry, device)]
    return checks


def _family_checks() -> dict[str, Callable[[Any, str], list[Check]]]:
    from nima.testing import attention, data, layers, optim, positional, samplers, tokenizers

    return {
        "attention": attention.attention_checks,
        "positional": positional.positional_checks,
        "norm": layers.layer_checks,
        "mlp": layers.layer_checks,
        "tokenizer": tokenizers.tokenizer_checks,
        "sampler": samplers.sampler_checks,
        "optimizer": optim.optimizer_checks,
        "scheduler": optim.scheduler_checks,
        "dataset": data.dataset_checks,
        "logger": data.logger_checks,
    }


def device_skip(entry: Any, device: str) -> tuple[bool, str | None]:
    """(declared, skip reason) of running `entry` on `device`: declared unless its `devices`
    leaves the device out; skipped where the device is absent on this machine."""
    devices = entry.capabilities.get("devices")
    if devices is not None and device not in devices:
        hint = (entry.capabilities.get("interpreter") or {}).get(device)
        return False, f"device {device} not declared" + (f" ({hint})" if hint else "")
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            return True, "no CUDA device on this machine"
    return True, None


def dtypes_on(entry: Any, device: str, default: Iterable[str]) -> list[str]:
    """The dtypes `entry` declares on `device` (`dtypes`, narrowed by `dtypes_by_device`); a
    plugin declaring none (None: any) is checked in `default`."""
    caps = entry.capabilities
    dtypes = caps.get("dtypes")
    dtypes = list(default) if dtypes is None else list(dtypes)
    narrowed = (caps.get("dtypes_by_device") or {}).get(device)
    return [d for d in dtypes if narrowed is None or d in narrowed]


def _normal(name: str) -> str:
    return name.lower().replace("-", "_")


def select(entries: Iterable[Any], selection: Iterable[str]) -> list[Any]:
    """The entries a selection names: a package ("nima" for the built-ins, "nima-example" or
    its module "nima_example"), a family ("attention") or one plugin ("attention.softcap").
    An empty selection is every entry; a name that selects nothing is a NimaError listing the
    loaded packages."""
    from nima.errors import NimaError
    from nima.registry import FAMILIES

    entries, chosen = list(entries), []
    for wanted in selection:
        family, _, name = wanted.partition(".")
        if name and family in FAMILIES:
            found = [e for e in entries if e.family == family and e.name == name]
        elif wanted in FAMILIES:
            found = [e for e in entries if e.family == wanted]
        else:
            found = [e for e in entries if _normal(e.package) == _normal(wanted)]
        if not found:
            packages = sorted({e.package for e in entries})
            raise NimaError(
                f"{wanted!r} selects no registered plugin. Name a plugin package (loaded: "
                f"{', '.join(packages) or 'none'}; is yours installed, e.g. pip install -e .?), "
                f"a family ({', '.join(FAMILIES)}) or one plugin as family.name."
            )
        chosen += [e for e in found if all(e is not c for c in chosen)]
    return chosen if selection else entries
