"""The declared type of each family's capabilities: a typo is an error, not a silently skipped check.

A plugin declares what it supports when it registers (`capabilities={...}`); `nima run` checks a
config against it before training and `nima check` verifies it. Each family has one TypedDict
below (all keys optional); registration refuses an unknown key, naming the valid ones (`dtype`
for `dtypes` would otherwise disable the dtype check), and a value of the wrong type.
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, TypedDict, Union

from nima.errors import CapabilityError

DType = Literal["float32", "float64", "float16", "bfloat16"]
Mask = Literal["causal", "causal_bottom_right", "key_padding"]
ActsOn = Literal["embed", "rotate", "bias"]
NormFormula = Literal["layernorm", "rmsnorm"]
MlpFormula = Literal["gelu", "swiglu", "relu2"]
# The device types a plugin may name (torch's, as in torch.device("cuda")); "gpu" is not one.
Device = Literal["cpu", "cuda", "mps", "xpu", "hpu", "mtia"]
SamplerRule = Literal[
    "temperature", "top_k", "top_p", "min_p", "greedy", "typical", "repetition_penalty",
    "frequency_penalty", "presence_penalty", "no_repeat_ngram",
]  # fmt: skip


class Buildable(TypedDict, total=False):
    """What every family may declare."""

    # constructor arguments nima.testing builds the plugin with (a required argument, a size)
    check_kwargs: dict[str, Any]


class Common(Buildable, total=False):
    """Absent `devices`/`dtypes`, or None, means any."""

    backward: bool  # it has a gradient (absent: no backward)
    devices: list[Device] | None  # e.g. ["cpu", "cuda"]
    dtypes: list[DType] | None
    dtypes_by_device: dict[Device, list[DType]]  # narrows `dtypes` on a device
    interpreter: dict[Device, str]  # device -> how to reach it through an interpreter (Triton's)


class AttentionCapabilities(Common, total=False):
    head_dims: Sequence[int] | None  # a list or a range; None: any
    masks: list[Mask]
    bias: bool  # takes an additive attention bias (positional.alibi needs it)
    deterministic: bool
    # reference(instance) -> the attention function it must match, for a plugin that computes
    # another function by design (default: attention.reference); nima.testing calls it in float64
    reference: Callable[..., Any]


class PositionalCapabilities(Common, total=False):
    acts_on: list[ActsOn]  # where it acts: token embeddings, q and k, the attention bias


class NormCapabilities(Common, total=False):
    formula: NormFormula  # the written-out reference it must match (nima.testing.layers)


class MlpCapabilities(Common, total=False):
    formula: MlpFormula


class TokenizerCapabilities(Buildable, total=False):
    # unseen text maps to an unknown token, so only seen characters round-trip (absent: False,
    # any text must round-trip)
    unk: bool
    hf_format: bool  # reads and writes Hugging Face tokenizer.json


class SamplerCapabilities(Buildable, total=False):
    kind: Literal["processor", "selector"]
    rule: SamplerRule  # the filtering rule `nima.testing` checks it against


CAPABILITY_TYPES: dict[str, type] = {
    "attention": AttentionCapabilities,
    "positional": PositionalCapabilities,
    "norm": NormCapabilities,
    "mlp": MlpCapabilities,
    "tokenizer": TokenizerCapabilities,
    "sampler": SamplerCapabilities,
    "strategy": Common,
    "optimizer": Common,
    "scheduler": Common,
    "model": Common,
    "objective": Common,
    "dataset": Common,
    "launcher": Common,
    "logger": Common,
}


def fields(family: str) -> dict[str, Any]:
    """The declared capability keys of `family` and their types."""
    return typing.get_type_hints(CAPABILITY_TYPES.get(family, Common))


def validate(family: str, name: str, package: str, capabilities: Mapping[str, Any]) -> None:
    """Raise CapabilityError on a key `family` does not declare or a value of the wrong type."""
    if not isinstance(capabilities, Mapping):
        raise CapabilityError(
            f"{family} plugin {name!r} (package {package!r}): capabilities must be a dict, "
            f"got {type(capabilities).__name__}."
        )
    known = fields(family)
    valid = "; ".join(f"{key}: {type_name(hint)}" for key, hint in known.items())
    for key, value in capabilities.items():
        where = f"{family} plugin {name!r} (package {package!r})"
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1, cutoff=0.5)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise CapabilityError(
                f"{where} declares an unknown capability {key!r}.{hint} Valid {family} "
                f"capabilities ({CAPABILITY_TYPES.get(family, Common).__name__}): {valid}."
            )
        if not conforms(value, known[key]):
            raise CapabilityError(
                f"{where}: capability {key!r} must be {type_name(known[key])}, got {value!r}."
            )


def conforms(value: Any, hint: Any) -> bool:
    """Whether `value` is of the (small) type language used above."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if hint is None or hint is type(None):
        return value is None
    if origin in (Union, types.UnionType):
        return any(conforms(value, a) for a in args)
    if origin is Literal:
        return any(value == a and type(value) is type(a) for a in args)
    if origin is Callable or hint is Callable:
        return callable(value)
    if origin is list:
        return isinstance(value, (list, tuple)) and all(conforms(v, args[0]) for v in value)
    if origin is Sequence:
        ok = isinstance(value, (list, tuple, range))
        return ok and all(conforms(v, args[0]) for v in value)
    if origin is dict:
        return isinstance(value, Mapping) and all(
            conforms(k, args[0]) and conforms(v, args[1]) for k, v in value.items()
        )
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def type_name(hint: Any) -> str:
    """'list[float32 | float64 | ...] | None': the type as a reader writes it."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is None or hint is type(None):
        return "None"
    if origin in (Union, types.UnionType):
        return " | ".join(type_name(a) for a in args)
    if origin is Literal:
        return " | ".join(repr(a) for a in args)
    if origin in (list, dict, Sequence):
        inner = ", ".join(type_name(a) for a in args)
        label = "sequence" if origin is Sequence else origin.__name__
        return f"{label}[{inner}]"
    return getattr(hint, "__name__", str(hint))
