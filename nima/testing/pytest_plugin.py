"""The `nima` pytest plugin (entry point `pytest11`): expands `conformance(...)` tests.

Cheap for projects that do not use it: importing this module imports neither torch nor any
plugin; they load only when a test marked `nima_conformance` is collected.
"""

from __future__ import annotations

from typing import Any

MARKER = "nima_conformance"  # the mark nima.testing.conformance.conformance puts on its test


def pytest_addoption(parser: Any) -> None:
    group = parser.getgroup("nima", "NIMA plugin conformance")
    group.addoption(
        "--nima-device",
        default="cpu",
        choices=("cpu", "cuda"),
        help="device the conformance checks run on (default: cpu)",
    )


def pytest_configure(config: Any) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}(*selection): run NIMA's contract checks on the selected plugins "
        "(nima.testing.conformance)",
    )


def pytest_generate_tests(metafunc: Any) -> None:
    marker = metafunc.definition.get_closest_marker(MARKER)
    if marker is None or "nima_check" not in metafunc.fixturenames:
        return
    import pytest

    from nima.errors import NimaError
    from nima.testing.conformance import declared_checks

    try:
        device = metafunc.config.getoption("nima_device")
        checks = declared_checks(tuple(marker.args), device, marker.kwargs.get("kwargs"))
    except NimaError as exc:  # e.g. the package is not installed: one clear line, no traceback
        problem = str(exc)
    else:
        problem = None
    if problem is not None:
        pytest.fail(problem, pytrace=False)
    metafunc.parametrize("nima_check", checks, ids=[c.id for c in checks])
