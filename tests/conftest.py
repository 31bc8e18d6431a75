"""Shared test setup."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from hypothesis import settings

from nima.testing.attention import session_seed

# Triton kernels (attention.triton, ...) run on CPU tensors through Triton's interpreter when
# there is no GPU. Triton reads TRITON_INTERPRET when it is first imported, so set it here,
# before any test module imports a kernel. `gpu`-marked tests are skipped without CUDA.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


# Property tests draw the same examples on every run (CI is reproducible) unless NIMA_TEST_SEED
# asks for exploration; hypothesis then prints the seed that replays a failure.
settings.register_profile("fixed", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile("explore" if "NIMA_TEST_SEED" in os.environ else "fixed")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (pytest -m gpu on a GPU machine)")
    for item in items:
        if item.get_closest_marker("gpu"):  # not item.keywords: that holds parameter ids too
            item.add_marker(skip)


def pytest_report_header(config) -> str:
    return f"random-shape tests: NIMA_TEST_SEED={session_seed()} (set it to draw other shapes)"


@pytest.fixture(scope="session")
def test_seed() -> int:
    """Seed of the random-shape tests: fixed unless NIMA_TEST_SEED is set (a failure names it)."""
    return session_seed()


@pytest.fixture(autouse=True, scope="session")
def _private_cache_dir(tmp_path_factory):
    """Token caches and downloads of the test session go to a temporary folder, not ~/.cache."""
    old = os.environ.get("NIMA_CACHE_DIR")
    os.environ["NIMA_CACHE_DIR"] = str(tmp_path_factory.mktemp("nima-cache"))
    yield
    if old is None:
        os.environ.pop("NIMA_CACHE_DIR", None)
    else:
        os.environ["NIMA_CACHE_DIR"] = old


@pytest.fixture
def shakespeare_file() -> Path:
    """The real Tiny Shakespeare file from $NIMA_DATA_DIR (skips, naming it, when unset)."""
    data_dir = os.environ.get("NIMA_DATA_DIR")
    if not data_dir:
        pytest.skip("set NIMA_DATA_DIR to the folder holding tinyshakespeare.txt to run this test")
    path = Path(data_dir) / "tinyshakespeare.txt"
    assert path.is_file(), f"NIMA_DATA_DIR={data_dir} but {path} does not exist"
    return path
