"""Registries: register, get, list, capabilities, and the errors a user sees."""

from __future__ import annotations

import pytest

from nima.capabilities import require
from nima.errors import CapabilityError, PluginClashError, UnknownPluginError
from nima.registry import FAMILIES, Registries, Registry


class Fast:
    """A fast kernel."""


class Slow:
    """A slow kernel."""


def test_register_get_and_list() -> None:
    registry = Registry("attention")
    entry = registry.register("fast", Fast, package="pkg-a", capabilities={"backward": True})
    assert registry.get("fast") is Fast
    assert entry.description == "A fast kernel."
    assert entry.package == "pkg-a"
    assert registry.names() == ["fast"]
    assert registry.find(Fast()) is entry
    assert entry.as_dict()["capabilities"] == {"backward": True}


def test_unknown_name_names_family_close_matches_and_all_names() -> None:
    registry = Registry("attention")
    registry.register("sdpa", Fast, package="p")
    registry.register("reference", Slow, package="p")
    with pytest.raises(UnknownPluginError) as info:
        registry.get("sdpx")
    message = str(info.value)
    assert "attention" in message and "'sdpx'" in message
    assert "Did you mean 'sdpa'" in message
    assert "reference, sdpa" in message


def test_clash_names_both_packages() -> None:
    registry = Registry("positional")
    registry.register("rope", Fast, package="first-pkg")
    with pytest.raises(PluginClashError) as info:
        registry.register("rope", Slow, package="second-pkg")
    assert "first-pkg" in str(info.value) and "second-pkg" in str(info.value)
    assert registry.get("rope") is Fast  # the first registration stays


def test_unknown_family_lists_families() -> None:
    with pytest.raises(UnknownPluginError) as info:
        Registries()["atention"]
    assert "'attention'" in str(info.value)
    assert all(f in str(info.value) for f in FAMILIES)


def test_dtypes_can_be_narrowed_per_device() -> None:
    registry = Registry("attention")
    kernel = registry.register(
        "kernel", Fast, package="p",
        capabilities={"dtypes": ["float32", "bfloat16"],
                      "dtypes_by_device": {"cpu": ["float32"]}},
    )  # fmt: skip
    registry.register("anything", Slow, package="p")
    require(registry, kernel, device="cuda", dtype="bfloat16")
    require(registry, kernel, device="cpu", dtype="float32")
    with pytest.raises(CapabilityError, match="dtype=bfloat16 on cpu.*anything"):
        require(registry, kernel, device="cpu", dtype="bfloat16")


def test_find_prefers_the_exact_class_over_a_base() -> None:
    class Child(Fast):
        """A plugin subclassing another."""

    registry = Registry("positional")
    registry.register("base", Fast, package="p")
    child = registry.register("child", Child, package="p")
    assert registry.find(Child()) is child
    assert registry.find(Fast()).name == "base"


def test_capability_error_names_a_plugin_that_has_it() -> None:
    registry = Registry("attention")
    gpu_only = registry.register(
        "gpu_only", Fast, package="p", capabilities={"backward": True, "devices": ["cuda"]}
    )
    registry.register("anywhere", Slow, package="p", capabilities={"backward": True})
    require(registry, gpu_only, device="cuda", backward=True)  # has it: no error
    with pytest.raises(CapabilityError) as info:
        require(registry, gpu_only, device="cpu", backward=True)
    assert "device=cpu" in str(info.value) and "anywhere" in str(info.value)


def test_a_misspelt_capability_is_an_error_naming_the_valid_keys() -> None:
    """Typed capabilities: `dtype` for `dtypes` used to disable the dtype check silently."""
    with pytest.raises(CapabilityError) as info:
        Registry("attention").register("k", Fast, package="p", capabilities={"dtype": ["float32"]})
    message = str(info.value)
    assert "unknown capability 'dtype'" in message and "Did you mean 'dtypes'?" in message
    assert "AttentionCapabilities" in message
    assert all(key in message for key in ("backward: bool", "head_dims", "bias: bool", "masks"))


@pytest.mark.parametrize(
    ("family", "capabilities", "expected"),
    [
        ("attention", {"dtypes": "float32"}, "'dtypes' must be list["),
        ("attention", {"dtypes": ["fp16"]}, "'float16'"),  # names the valid dtype spellings
        ("attention", {"backward": "yes"}, "'backward' must be bool"),
        ("attention", {"head_dims": [64, "128"]}, "'head_dims' must be sequence[int] | None"),
        ("positional", {"acts_on": ["rotary"]}, "'acts_on' must be list['embed' | 'rotate'"),
        ("sampler", {"rule": "nucleus"}, "'rule' must be"),
        ("tokenizer", {"backward": True}, "unknown capability 'backward'"),
        ("attention", {"devices": ["gpu"]}, "'devices' must be list['cpu' | 'cuda'"),
        ("mlp", {"devices": ["CUDA"]}, "'cuda'"),
        ("attention", {"dtypes_by_device": {"gpu": ["float16"]}}, "'dtypes_by_device' must be"),
        ("norm", {"formula": "gelu"}, "'formula' must be 'layernorm' | 'rmsnorm'"),
        ("mlp", {"formula": "rmsnorm"}, "'formula' must be 'gelu' | 'swiglu' | 'relu2'"),
        ("attention", {"check_kwargs": {1: 2}}, "'check_kwargs' must be dict[str, Any]"),
    ],
)
def test_a_wrong_capability_type_is_an_error(
    family: str, capabilities: dict, expected: str
) -> None:
    with pytest.raises(CapabilityError) as info:
        Registry(family).register("k", Fast, package="pkg", capabilities=capabilities)
    assert expected in str(info.value) and "'pkg'" in str(info.value)


def test_well_typed_capabilities_are_kept_as_given() -> None:
    caps = {"backward": True, "devices": None, "head_dims": range(1, 9), "bias": False,
            "dtypes_by_device": {"cpu": ["float32"]}, "interpreter": {"cpu": "how"},
            "reference": lambda attn: attn}  # fmt: skip
    entry = Registry("attention").register("k", Fast, package="p", capabilities=caps)
    assert entry.capabilities == caps
    shown = entry.as_dict()["capabilities"]  # nima plugins --json
    assert shown["head_dims"] == "1..8" and shown["reference"].endswith("<lambda>")
