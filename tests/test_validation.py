"""Bound values are checked against their configurable's annotations before anything is built."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import gin
import pytest

from nima import config
from nima.errors import ConfigError
from nima.hooks import PluginSystem, reset
from nima.validation import Range, describe, problem

SMOKE = Path(__file__).resolve().parent.parent / "experiments" / "smoke.gin"


@pytest.fixture(scope="module")
def system() -> PluginSystem:
    return reset()


class Thing:
    """Stands in for a plugin contract (an instance is expected)."""


@pytest.mark.parametrize(
    ("value", "hint", "ok"),
    [
        (3, int, True),
        (True, int, False),  # a bool is not a count
        ("3", int, False),
        (3, float, True),
        (2.5, Annotated[float, Range(ge=0, lt=1)], False),
        (0.0, Annotated[float, Range(ge=0, lt=1)], True),
        (1.0, Annotated[float, Range(ge=0, lt=1)], False),
        (0, Annotated[int, Range(ge=1)], False),
        (None, int | None, True),
        ("full", Literal["full", "batches"], True),
        ("Full", Literal["full", "batches"], False),
        ((0.9, 0.95), tuple[float, float], True),
        ((0.9,), tuple[float, float], False),
        ([1, "x"], Sequence[int], False),
        ("abc", Sequence[int], False),
        ("x", Thing, False),
        ("x", Callable[..., Any], False),
        (object(), Any, True),
        (float("nan"), float, False),
        (float("inf"), Annotated[float, Range(gt=0)], False),
        (float("nan"), Annotated[float, Range(gt=0, le=1)], False),
    ],
)
def test_problem(value, hint, ok) -> None:
    assert (problem(value, hint) is None) == ok


def test_describe_reads_as_words() -> None:
    assert describe(Annotated[int, Range(ge=1)]) == "an int >= 1"
    assert describe(Annotated[float, Range(ge=0, lt=1)]) == "a number >= 0 and < 1"
    assert describe(Literal["full", "batches"]) == "one of 'full', 'batches'"
    assert "factory" in describe(Callable[..., Any])


@pytest.mark.parametrize(
    ("binding", "says"),
    [
        ("train.steps = -5", "it must be >= 1"),
        ("train.batch_size = 0", "it must be >= 1"),
        ("train.eval_interval = 0", "it must be >= 1"),
        ("train.log_interval = 0", "it must be >= 1"),
        ("train.eval_batches = 0", "it must be >= 1"),
        ("train.final_eval = 'Full'", "train.final_eval takes one of 'full', 'batches'"),
        ("train.steps = '10'", "train.steps takes an int >= 1"),
        ("train.grad_clip = -1.0", "it must be >= 0"),
        ("adamw.betas = (0.9,)", "adamw.betas takes a list of 2"),
        ("GPT.n_layers = 'four'", "GPT.n_layers takes an int >= 1"),
        ("GPT.dropout = 1.5", "it must be >= 0 and < 1"),
        ("GPT.attention = @attention.sdpa", "write @attention.sdpa() (with parentheses"),
        ("GPT.positional = @positional.rope()", "write @positional.rope (no parentheses)"),
    ],
)
def test_bad_values_are_refused_at_parse(system: PluginSystem, binding: str, says: str) -> None:
    with pytest.raises(ConfigError) as info:
        config.parse([SMOKE], [binding], system)
    message = str(info.value)
    assert message.startswith("--bind: `") and says in message
    assert "\n" not in message


def test_a_bad_value_in_a_file_names_file_and_line(system: PluginSystem, tmp_path: Path) -> None:
    path = tmp_path / "x.gin"
    path.write_text(f"include '{SMOKE}'\n\ntrain.steps = -5\n")
    with pytest.raises(ConfigError, match=rf"{path}:3: `train.steps = -5`"):
        config.parse([path], [], system)


def test_macros_are_checked_through(system: PluginSystem) -> None:
    with pytest.raises(ConfigError, match="train.seed = -4"):
        config.parse([SMOKE], ["train.seed = %SEED", "SEED = -4"], system)


def test_instance_where_a_factory_belongs_says_which_form(system: PluginSystem) -> None:
    with pytest.raises(ConfigError) as info:
        config.parse([SMOKE], ["train.optimizer = @optimizer.adamw()"], system)
    assert "write @optimizer.adamw (no parentheses)" in str(info.value)


def test_factory_where_an_instance_belongs_says_which_form(system: PluginSystem) -> None:
    with pytest.raises(ConfigError) as info:
        config.parse([SMOKE], ["train.tokenizer = @tokenizer.char"], system)
    assert "write @tokenizer.char() (with parentheses" in str(info.value)
    with pytest.raises(ConfigError, match=r"item 0: .*write @sampler.temperature\(\)"):
        config.parse([SMOKE], ["train.samplers = [@sampler.temperature]"], system)


def test_one_short_name_in_two_families_names_both(tmp_path: Path) -> None:
    class Alibi:
        """A stand-in attention plugin sharing a short name with a positional one."""

        def __init__(self, x: int = 1) -> None:
            self.x = x

    def alibi(x: int = 1) -> None:
        """A stand-in positional plugin."""

    system = PluginSystem()  # plugin-free: only what this test registers
    system.registries["attention"].register("alibi", Alibi, package="test")
    system.registries["positional"].register("alibi", alibi, package="test")
    path = tmp_path / "amb.gin"
    path.write_text("attention.alibi.x = 1\n\nalibi.x = 2\n")
    try:
        for files, bindings, where in (([], ["alibi.x = 2"], "--bind"), ([path], [], f"{path}:3")):
            with pytest.raises(ConfigError) as info:
                config.parse(files, bindings, system)
            message = str(info.value)
            assert message.startswith(where)
            assert "attention.alibi" in message and "positional.alibi" in message
            assert "\n" not in message
    finally:
        for selector in ("positional.alibi", "attention.alibi"):
            gin.config._REGISTRY.pop(selector)


def test_building_error_names_the_configurable_and_its_values() -> None:
    def fragile(model: Any, x: int = 1) -> None:
        """An optimizer factory that fails while it is built."""
        raise ValueError(f"x={x} is too large for this model")

    system = PluginSystem()
    system.registries["optimizer"].register("fragile", fragile, package="test")
    try:
        config.parse([], ["train.optimizer = @optimizer.fragile", "fragile.x = 3"], system)
        settings = gin.get_configurable("nima.train")()
        with pytest.raises(ConfigError) as info, config.building():
            settings.optimizer(None)
    finally:
        gin.config._REGISTRY.pop("optimizer.fragile")
    message = str(info.value)
    assert message.startswith("Building fragile failed: ValueError: x=3 is too large")
    assert "fragile.x = 3" in message and "In call to configurable" not in message


def test_checked_classes_refuse_bad_arguments_from_python_too() -> None:
    from nima_samplers.samplers import TopP

    with pytest.raises(ConfigError, match=r"TopP\(p=1.5\) is not valid: it must be > 0 and <= 1"):
        TopP(1.5)
    assert TopP(0.5).p == 0.5


def test_cli_refused_config_writes_nothing(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    out = subprocess.run(
        [sys.executable, "-m", "nima.cli", "run", str(SMOKE), "--bind", "train.steps = -5",
         "--run-dir", str(run_dir)],
        capture_output=True, text=True, cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 2, out.stderr
    assert out.stderr.startswith("error: --bind: `train.steps = -5` is not valid")
    assert "Traceback" not in out.stderr
    assert not run_dir.exists() and not (tmp_path / "runs").exists()


def test_a_nima_error_raised_inside_gin_keeps_its_class_and_message() -> None:
    def picky(model: Any) -> None:
        """An optimizer factory that refuses the model with a NimaError."""
        raise ConfigError("it needs a bigger model")

    system = PluginSystem()
    system.registries["optimizer"].register("picky", picky, package="test")
    try:
        config.parse([], ["train.optimizer = @optimizer.picky"], system)
        settings = gin.get_configurable("nima.train")()
        with pytest.raises(ConfigError) as info, config.building():
            settings.optimizer(None)
    finally:
        gin.config._REGISTRY.pop("optimizer.picky")
    assert str(info.value) == "picky: it needs a bigger model"  # the configurable, once
    assert type(info.value) is ConfigError
