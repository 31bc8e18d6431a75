"""examples/plugin-package installed on its own, as a third-party package would be.

The package is built from a copy (setuptools writes build/ and *.egg-info next to the sources)
and installed into a temporary folder that is put on PYTHONPATH: NIMA must find it through the
`nima` entry-point group alone, list it, train with it from gin, and record it in config.gin.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "plugin-package"
DIST = "nima-example"  # [project].name in examples/plugin-package/pyproject.toml


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(source copy, site folder the package is installed into)."""
    tmp = tmp_path_factory.mktemp("example-plugin")
    source, site = tmp / "src", tmp / "site"
    ignore = shutil.ignore_patterns("build", "dist", "*.egg-info", "__pycache__", ".pytest_cache")
    shutil.copytree(EXAMPLE, source, ignore=ignore)
    cmd = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation",
           "--no-index", "--disable-pip-version-check", "--quiet", "--target", str(site),
           str(source)]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"pip install of the example failed:\n{done.stderr}"
    return source, site


def run(args: list[str], site: Path, cwd: Path = ROOT, **env: str) -> subprocess.CompletedProcess:
    """A subprocess that sees the example only through PYTHONPATH (its .dist-info entry point)."""
    environ = {k: v for k, v in os.environ.items() if k != "NIMA_DISABLE_PLUGINS"}
    path = [str(site)] + ([environ["PYTHONPATH"]] if environ.get("PYTHONPATH") else [])
    environ.update(env, PYTHONPATH=os.pathsep.join(path), PYTHONDONTWRITEBYTECODE="1")
    return subprocess.run(args, cwd=cwd, env=environ, capture_output=True, text=True, timeout=600)


def nima(*args: str, site: Path, **env: str) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "nima.cli", *args], site, **env)


def test_plugins_lists_softcap_from_its_package(example: tuple[Path, Path]) -> None:
    _, site = example
    done = nima("plugins", "--json", site=site)
    assert done.returncode == 0, done.stderr
    assert "warning" not in done.stderr, done.stderr  # the example loaded without failures
    entries = {(e["family"], e["name"]): e for e in json.loads(done.stdout)}
    softcap = entries[("attention", "softcap")]
    assert softcap["package"] == DIST
    assert softcap["gin_name"] == "attention.softcap"
    assert softcap["capabilities"]["backward"] is True
    assert softcap["capabilities"]["bias"] is True
    assert entries[("attention", "sdpa")]["package"] == "nima"  # the built-ins still load


def test_smoke_run_selects_softcap_from_gin(
    example: tuple[Path, Path], shakespeare_file: Path, tmp_path: Path
) -> None:
    _, site = example
    run_dir = tmp_path / "run"
    done = nima(
        "run", "experiments/smoke.gin",
        "--bind", "GPT.attention = @attention.softcap()",
        "--bind", "softcap.cap = 30.0",
        "--bind", "GPT.positional = @positional.alibi",  # needs the declared bias capability
        "--run-dir", str(run_dir), "--no-progress",
        site=site, NIMA_DATA_DIR=str(shakespeare_file.parent),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "best val loss" in done.stdout
    config = (run_dir / "config.gin").read_text()
    assert "GPT.attention = @attention.softcap()" in config
    assert "softcap.cap = 30.0" in config
    assert "GPT.positional = @positional.alibi" in config


def test_example_package_passes_its_own_tests(example: tuple[Path, Path]) -> None:
    """The example's conformance tests (nima.testing parity) against the installed package."""
    source, site = example
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"]
    done = run(cmd, site, cwd=source)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert " passed" in done.stdout and "skipped" not in done.stdout, done.stdout[-2000:]
