"""Conformance kit: parity and benchmark helpers any plugin author can use."""
