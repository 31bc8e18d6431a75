"""`include` is read beside the including file, identically by gin and by NIMA's plugin scan,
and nothing of one parse (bindings, search paths) reaches the next."""

from __future__ import annotations

import os
from pathlib import Path

import gin
import pytest

from nima import config
from nima.errors import ConfigError, UnknownPluginError
from nima.hooks import PluginSystem, reset


@pytest.fixture(scope="module")
def system() -> PluginSystem:
    return reset()


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def layers(system: PluginSystem, *files: Path) -> int:
    config.parse(list(files), [], system)
    return gin.query_parameter("GPT.n_layers")


def test_two_experiments_in_one_process_each_read_their_own_base(system, tmp_path) -> None:
    write(tmp_path / "a" / "base.gin", "GPT.n_layers = 1\n")
    write(tmp_path / "b" / "base.gin", "GPT.n_layers = 2\n")
    a = write(tmp_path / "a" / "main.gin", "include 'base.gin'\n")
    b = write(tmp_path / "b" / "main.gin", "include 'base.gin'\n")
    assert layers(system, a) == 1
    assert layers(system, b) == 2
    assert layers(system, a) == 1


def test_a_base_in_the_current_directory_does_not_win(system, tmp_path, monkeypatch) -> None:
    write(tmp_path / "base.gin", "GPT.n_layers = 7\n")  # the current directory's
    write(tmp_path / "exp" / "base.gin", "GPT.n_layers = 3\n")
    write(tmp_path / "exp" / "main.gin", "include 'base.gin'\n")
    monkeypatch.chdir(tmp_path)
    assert layers(system, Path("exp/main.gin")) == 3


def test_nested_includes_resolve_beside_each_including_file(system, tmp_path) -> None:
    write(tmp_path / "lib" / "deep" / "leaf.gin", "GPT.n_layers = 5\n")
    write(tmp_path / "lib" / "mid.gin", "include 'deep/leaf.gin'\n")
    main = write(tmp_path / "main.gin", "include 'lib/mid.gin'\n")
    assert layers(system, main) == 5


def test_absolute_include(system, tmp_path) -> None:
    base = write(tmp_path / "elsewhere" / "base.gin", "GPT.n_layers = 6\n")
    main = write(tmp_path / "exp" / "main.gin", f"include '{base}'\n")
    assert layers(system, main) == 6


def test_missing_include_names_the_including_file(system, tmp_path, monkeypatch) -> None:
    write(tmp_path / "base.gin", "GPT.n_layers = 7\n")  # not beside main.gin: must not be used
    write(tmp_path / "exp" / "main.gin", "include 'base.gin'\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as info:
        config.parse([Path("exp/main.gin")], [], system)
    message = str(info.value)
    assert "exp/main.gin" in message and "base.gin" in message and "does not exist" in message
    assert "In file" not in message  # gin's own location notes are not shown


def test_plugin_scan_reads_the_same_include_as_gin(system, tmp_path, monkeypatch) -> None:
    """A misspelt plugin in the included file is found where gin would read it, not in cwd."""
    write(tmp_path / "base.gin", "GPT.attention = @attention.sdpa()\n")
    write(tmp_path / "exp" / "base.gin", "GPT.attention = @attention.sdpx()\n")
    write(tmp_path / "exp" / "main.gin", "include 'base.gin'\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UnknownPluginError, match=r"exp/base.gin:1"):
        config.parse([Path("exp/main.gin")], [], system)


def test_no_search_path_or_binding_survives_a_parse(system, tmp_path) -> None:
    a = write(tmp_path / "a" / "main.gin", "GPT.n_layers = 1\nGPT.d_model = 64\n")
    b = write(tmp_path / "b" / "main.gin", "GPT.n_layers = 2\n")
    before = gin.config._LOCATION_PREFIXES[:], gin.config._FILE_READERS[:]
    config.parse([a], [], system)
    config.parse([b], [], system)
    assert (gin.config._LOCATION_PREFIXES, gin.config._FILE_READERS) == before
    with pytest.raises(ValueError):
        gin.query_parameter("GPT.d_model")  # a's binding is gone


def test_nima_prefix_includes_a_shipped_experiment(system, tmp_path) -> None:
    main = write(tmp_path / "mine.gin", "include 'nima:smoke.gin'\nGPT.n_layers = 3\n")
    assert layers(system, main) == 3
    assert gin.query_parameter("GPT.d_model") == 32  # from the shipped smoke.gin
    assert os.path.isfile(config.experiments_dir() / "gpt.gin")
