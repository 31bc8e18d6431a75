"""Capability refusals read as a sentence: what was asked, what the plugin supports, who has it."""

from __future__ import annotations

import pytest

from nima.capabilities import TRITON_INTERPRETER, check_model, describe, require
from nima.errors import CapabilityError
from nima.registry import Registries, Registry


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


# --- check_model: every plugin of every layer, at the compute dtype -------------------------


class Fast:
    """An attention kernel without a bias."""


class Biased:
    """Plain attention with a bias."""


class Slopes:
    """A positional plugin acting on the attention bias."""


class CudaNorm:
    """A CUDA-only norm."""


def registries() -> Registries:
    regs = Registries()
    anywhere = {"backward": True, "devices": None, "dtypes": ["float32", "bfloat16"]}
    regs["attention"].register(
        "fast", Fast, package="pkg", capabilities={**anywhere, "bias": False}
    )
    regs["attention"].register(
        "biased",
        Biased,
        package="pkg",
        capabilities={**anywhere, "dtypes": ["float32"], "bias": True},
    )
    regs["positional"].register(
        "slopes", Slopes, package="pkg", capabilities={"backward": True, "acts_on": ["bias"]}
    )
    regs["norm"].register("cuda_norm", CudaNorm, package="pkg", capabilities={"devices": ["cuda"]})
    return regs


class Model:
    """A model that lists its plugins, one attention instance per layer."""

    head_dim = 16

    def __init__(self, *plugins):
        self._plugins = plugins

    def plugins(self):
        return iter(self._plugins)


def check(model, dtype="float32", **options) -> str | None:
    try:
        check_model(model, registries(), device="cpu", dtype=dtype, **options)
    except CapabilityError as error:
        return str(error)
    return None


def test_every_layers_plugins_are_checked() -> None:
    """Layer 0 is fine; layer 1's own instance lacks the compute dtype: refused, by name."""
    model = Model(("attention", Fast()), ("attention", Biased()))
    message = check(model, dtype="bfloat16")
    assert "attention plugin 'biased'" in message and "dtype=bfloat16" in message
    assert check(model, dtype="float32") is None


def test_a_positional_bias_needs_attention_that_takes_one() -> None:
    message = check(Model(("positional", Slopes()), ("attention", Fast())))
    assert "attention plugin 'fast' (package 'pkg') does not support bias." in message
    assert "no additive bias" in message  # what it does support
    assert message.endswith("Plugins that support backward, device=cpu, dtype=float32, "
                            "head_dim=16, bias: biased.")  # fmt: skip
    assert check(Model(("positional", Slopes()), ("attention", Biased()))) is None


def test_norm_and_mlp_plugins_are_checked_and_backward_only_when_training() -> None:
    message = check(Model(("norm", CudaNorm())))
    assert "norm plugin 'cuda_norm'" in message and "backward" in message
    assert "device=cpu" in message
    inference = check(Model(("norm", CudaNorm())), training=False)
    assert "does not support device=cpu." in inference  # backward is not asked for


def test_a_model_that_does_not_list_its_plugins_is_refused_not_skipped() -> None:
    class Opaque:
        head_dim = 16
        attention = Fast()

    message = check(Opaque())
    assert "does not list its plugins" in message and "plugins()" in message


def test_unregistered_instances_declare_nothing_to_check() -> None:
    assert check(Model(("attention", object()), ("mlp", object()))) is None


def test_gpt_lists_every_layers_plugins() -> None:
    import nima
    from nima.models.gpt import GPT

    model = GPT(vocab_size=11, context_length=8, d_model=16, n_layers=2, n_heads=2,
                attention=nima.get("attention", "sdpa")(), positional=nima.get("positional", "alibi"),
                norm=nima.get("norm", "rmsnorm"), mlp=nima.get("mlp", "swiglu"))  # fmt: skip
    families = [family for family, _ in model.plugins()]
    assert families.count("attention") == 2 and families.count("mlp") == 2
    assert families.count("norm") == 5 and families.count("positional") == 1  # 2 per block + final
    check_model(model, nima.hooks.system().registries, device="cpu", dtype="bfloat16")
