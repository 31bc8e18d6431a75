"""Test your plugins in one line: every contract check of every plugin a package registers.

In your plugin package's tests (with NIMA and your package installed):

    from nima.testing.conformance import conformance

    test_my_plugins = conformance("nima-example")   # a package, "family.name" or a family

pytest then collects one test per plugin and declared capability, e.g.
`test_my_plugins[attention.softcap:float16]`; a failure names the broken property
("attention.softcap breaks 'causal' (query i sees keys j <= i + Nk - Nq): ..."). Capabilities a plugin
does not declare are not tested (`nima check` shows them as "not declared"). The pytest plugin
(nima.testing.pytest_plugin, loaded through the `pytest11` entry point) adds `--nima-device`
(cpu by default, or cuda) and expands these tests at collection time.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from nima.testing.pytest_plugin import MARKER


def conformance(
    *selection: str, kwargs: Mapping[str, Mapping[str, Any]] | None = None
) -> Callable[..., None]:
    """A pytest test function, parametrized over every declared check of the selected plugins
    (packages, families or family.name; none: every registered plugin). `kwargs` gives the
    constructor arguments of plugins that need some, by "family.name" (over their
    `check_kwargs` capability): conformance("my-pkg", kwargs={"attention.windowed": {"window": 8}})."""
    import pytest

    @getattr(pytest.mark, MARKER)(*selection, kwargs=dict(kwargs or {}))
    def test_conformance(nima_check: Any) -> None:
        verify(nima_check)

    return test_conformance


def verify(check: Any) -> None:
    """Run one check inside pytest: a pass, a skip (with why) or a failure naming the property."""
    import pytest

    from nima.testing.kit import FAILING, SKIPPED, run_check

    result = run_check(check)
    if result.status == SKIPPED:
        pytest.skip(result.message)
    if result.status == FAILING:
        pytest.fail(result.message, pytrace=False)


def declared_checks(
    selection: tuple[str, ...], device: str, kwargs: Mapping[str, Mapping[str, Any]] | None = None
) -> list[Any]:
    """The declared checks of the selected plugins (what the pytest plugin parametrizes)."""
    import nima
    from nima.testing.kit import collect, select

    entries = select(nima.plugins(), selection)
    return [c for c in collect(entries, device=device, kwargs=kwargs) if c.declared]
