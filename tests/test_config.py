"""gin glue: every built-in is selectable from gin; bad files and bindings give clear errors."""

from __future__ import annotations

from pathlib import Path

import gin
import pytest
import torch

from nima import config
from nima.errors import ConfigError, UnknownPluginError
from nima.hooks import PluginSystem, reset
from nima.registry import FAMILIES
from nima.runs import configured_settings


@pytest.fixture(scope="module")
def system() -> PluginSystem:
    return reset()


def write(tmp_path: Path, text: str, name: str = "x.gin") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_every_builtin_is_a_gin_configurable_of_its_family(system: PluginSystem) -> None:
    entries = system.registries.entries()
    assert {e.family for e in entries} == set(FAMILIES)  # every family has a built-in
    config.parse([], [], system)
    for entry in entries:
        selector = f"{entry.family}.{entry.gin_name or entry.name}"
        # a reference to the configurable (not a call) is what gin hands to a parameter
        gin.parse_config(f"train.samplers = [@{selector}]")
        assert gin.query_parameter("train.samplers")[0].configurable.wrapped is entry.obj


def test_selection_and_parameters_reach_the_plugin(system: PluginSystem, tmp_path: Path) -> None:
    base = write(tmp_path, "GPT.n_layers = 3\nrope.base = 500.0\n", "base.gin")
    main = write(
        tmp_path,
        f"include '{base.name}'\n"
        "train.model = @GPT\ntrain.dataset = @dataset.shakespeare_char()\n"
        "train.tokenizer = @tokenizer.char()\ntrain.optimizer = @optimizer.sgd\n"
        "train.scheduler = @scheduler.constant\n"
        "GPT.attention = @attention.reference()\nGPT.positional = @positional.rope\n",
    )
    config.parse([main], ["GPT.d_model = 32", "GPT.n_heads = 2"], system)
    settings = configured_settings()
    model = settings.model(vocab_size=11)
    assert len(model.blocks) == 3  # from the included file
    assert model.token_embedding.embedding_dim == 32  # from --bind
    assert isinstance(model.attention, system.registries["attention"].get("reference"))
    assert model.positional.base == 500.0
    optimizer = settings.optimizer(model)
    assert isinstance(optimizer, torch.optim.SGD)


def test_missing_file(system: PluginSystem, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        config.parse([tmp_path / "nope.gin"], [], system)


def test_syntax_error_names_file_and_line(system: PluginSystem, tmp_path: Path) -> None:
    path = write(tmp_path, "GPT.n_layers = 2\nGPT.d_model = = 3\n")
    with pytest.raises(ConfigError) as info:
        config.parse([path], [], system)
    assert f"{path}:2" in str(info.value)


def test_misspelt_plugin_gives_family_suggestions_and_line(system, tmp_path) -> None:
    path = write(tmp_path, "GPT.n_layers = 2\nGPT.attention = @attention.sdpx()\n")
    with pytest.raises(UnknownPluginError) as info:
        config.parse([path], [], system)
    message = str(info.value)
    assert f"{path}:2" in message and "attention" in message
    assert "Did you mean 'sdpa'" in message and "reference" in message


def test_unknown_bound_parameter_suggests_the_right_one(system: PluginSystem) -> None:
    with pytest.raises(ConfigError) as info:
        config.parse([], ["GPT.n_layer = 2"], system)
    assert "n_layer" in str(info.value) and "Did you mean n_layers" in str(info.value)


def test_unknown_configurable_in_binding(system: PluginSystem) -> None:
    with pytest.raises(ConfigError, match="nothing configurable is called 'GTP'"):
        config.parse([], ["GTP.n_layers = 2"], system)
