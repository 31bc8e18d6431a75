"""Entry-point discovery of throwaway plugin packages installed into a temporary path."""

from __future__ import annotations

import importlib
import textwrap
from pathlib import Path

import pytest

from nima.hooks import PluginSystem


def make_package(root: Path, dist: str, module: str, body: str) -> None:
    """A minimal installed distribution: its module plus a .dist-info with a `nima` entry point."""
    (root / f"{module}.py").write_text(textwrap.dedent(body))
    info = root / f"{dist.replace('-', '_')}-0.1.dist-info"  # as wheels name it
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[nima]\n{module} = {module}\n")
    importlib.invalidate_caches()


GOOD = """
    from nima import hookimpl

    class Echo:
        '''Returns v: a throwaway attention.'''
        def __call__(self, q, k, v, *, causal, scale=None, key_padding_mask=None):
            return v

    @hookimpl
    def nima_register(registry):
        registry.attention("echo", Echo, capabilities={"backward": True})
        registry.sampler("noop", lambda: (lambda logits: logits))
"""

BROKEN_IMPORT = """
    raise RuntimeError("this package is broken on purpose")
"""

CLASHING = """
    from nima import hookimpl

    @hookimpl
    def nima_register(registry):
        registry.positional("unique_name_ok", object)
        registry.attention("echo", object)  # already taken by good-plugin
"""


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("NIMA_DISABLE_PLUGINS", raising=False)
    return tmp_path


def test_good_broken_and_clashing_packages(site: Path) -> None:
    make_package(site, "good-plugin", "good_plugin", GOOD)
    make_package(site, "zz-broken-plugin", "zz_broken_plugin", BROKEN_IMPORT)
    make_package(site, "zz-clash-plugin", "zz_clash_plugin", CLASHING)
    system = PluginSystem()
    system.load_entry_points()

    echo = system.registries["attention"].entry("echo")
    assert echo.package == "good-plugin"
    assert "throwaway attention" in echo.description
    assert "noop" in system.registries["sampler"]

    failures = {f.package: str(f) for f in system.failures}
    assert "this package is broken on purpose" in failures["zz-broken-plugin"]
    assert "RuntimeError" in failures["zz-broken-plugin"]
    assert "zz-clash-plugin" in failures, system.failures
    clash = failures["zz-clash-plugin"]
    assert "good-plugin" in clash and "zz-clash-plugin" in clash
    # the clashing package is rolled back whole, and the built-ins still load
    assert "unique_name_ok" not in system.registries["positional"]
    assert "sdpa" in system.registries["attention"]


def test_disable_by_env_and_argument(site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_package(site, "good-plugin", "good_plugin", GOOD)
    monkeypatch.setenv("NIMA_DISABLE_PLUGINS", "good-plugin")
    system = PluginSystem()
    system.load_entry_points()
    assert "echo" not in system.registries["attention"]

    monkeypatch.delenv("NIMA_DISABLE_PLUGINS")
    system = PluginSystem()
    system.load_entry_points(disabled={"good_plugin"})  # the module name works too
    assert "echo" not in system.registries["attention"]


def test_core_works_with_no_plugins() -> None:
    system = PluginSystem()  # nothing loaded
    assert system.registries.entries() == []


MISSPELT = """
    from nima import hookimpl

    @hookimpl
    def nima_register(registry):
        registry.norm("fine_norm", object, capabilities={"backward": True})
        registry.attention("typo", object, capabilities={"dtype": ["float32"]})
"""


def test_a_misspelt_capability_rolls_back_that_package_only(site: Path) -> None:
    make_package(site, "typo-plugin", "typo_plugin", MISSPELT)
    system = PluginSystem()
    system.load_entry_points()
    failures = {f.package: str(f) for f in system.failures}
    assert "unknown capability 'dtype'" in failures["typo-plugin"]
    assert "Did you mean 'dtypes'?" in failures["typo-plugin"]
    assert "fine_norm" not in system.registries["norm"]  # registered before the typo: rolled back
    assert "rmsnorm" in system.registries["norm"] and "sdpa" in system.registries["attention"]
