"""Every contract check on every plugin this package registers, in one line (NIMA's pytest
plugin expands it into one test per plugin and declared capability)."""

from nima.testing.conformance import conformance

test_nima_example = conformance("nima-example")
