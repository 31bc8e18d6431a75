"""Capability refusals read as a sentence: what was asked, what the plugin supports, who has it."""

from __future__ import annotations

import pytest

from nima.capabilities import TRITON_INTERPRETER, describe, require
from nima.errors import CapabilityError
from nima.registry import Registry


class Kernel:
    """A kernel."""


class Plain:
    """Plain torch."""


def triton_like_registry(devices: list[str]) -> Registry:
    """A Triton-like kernel declared as attention.triton declares itself, plus a plain one."""
    registry = Registry("attention")
    registry.register(
        "kernel", Kernel, package="pkg",
        capabilities={
            "backward": True,
            "dtypes": ["float32", "float16", "bfloat16"],
            "devices": devices,
            "dtypes_by_device": {"cuda": ["float32", "float16", "bfloat16"],
                                 "cpu": ["float32", "float16"]},
            "head_dims": range(1, 257),
            "interpreter": TRITON_INTERPRETER,
        },
    )  # fmt: skip
    registry.register("plain", Plain, package="pkg", capabilities={"backward": True})
    return registry


def refusal(registry: Registry, **needs) -> str:
    with pytest.raises(CapabilityError) as info:
        require(registry, registry.entry("kernel"), **needs)
    return str(info.value)


def test_triton_kernel_on_cpu_names_the_interpreter_and_reads_as_a_sentence() -> None:
    message = refusal(
        triton_like_registry(["cuda"]), backward=True, device="cpu", dtype="float32", head_dim=64
    )
    assert "attention plugin 'kernel' (package 'pkg') does not support device=cpu" in message
    assert "TRITON_INTERPRET=1" in message
    assert "devices cuda;" in message and "head dims 1..256" in message
    assert "dtypes float32, float16, bfloat16" in message
    assert (
        "Plugins that support backward, device=cpu, dtype=float32, head_dim=64: plain." in message
    )
    assert "range(" not in message and "{" not in message


def test_no_interpreter_hint_when_the_device_is_not_what_is_missing() -> None:
    """Under the interpreter the CPU is declared; bf16 there is a dtype lack, not a device one."""
    message = refusal(triton_like_registry(["cuda", "cpu"]), device="cpu", dtype="bfloat16")
    assert "does not support dtype=bfloat16 on cpu" in message
    assert "(cpu: float32, float16)" in message
    assert "TRITON_INTERPRET" not in message


def test_a_dtype_missing_everywhere_is_named_once() -> None:
    message = refusal(triton_like_registry(["cuda"]), device="cuda", dtype="float64")
    assert "does not support dtype=float64." in message


def test_no_plugin_supports_it() -> None:
    registry = triton_like_registry(["cuda"])
    registry.unregister("plain")
    message = refusal(registry, device="cpu")
    assert "No registered attention plugin supports device=cpu." in message


@pytest.mark.parametrize(
    "caps,expected",
    [
        ({}, "forward only (no backward)"),
        ({"backward": True, "devices": None}, "forward and backward; any device"),
        (
            {"devices": [], "head_dims": [16, 32, 64]},
            "forward only (no backward); devices none; head dims 16, 32, 64",
        ),
        (
            {"dtypes": None, "head_dims": None},
            "forward only (no backward); any dtype; any head dim",
        ),
    ],
)
def test_describe(caps, expected) -> None:
    assert describe(caps) == expected
