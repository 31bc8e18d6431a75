"""User-facing errors: each carries a one-paragraph message that says what was wrong and what is valid.

The CLI prints these without a traceback (unless --debug); anything else is a bug in NIMA.
"""

from __future__ import annotations


class NimaError(Exception):
    """Base class of every error the user can fix by changing their input."""


class UnknownPluginError(NimaError, KeyError):
    """A family or a plugin name that is not registered."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class PluginClashError(NimaError):
    """Two packages registered the same name in one family."""


class CapabilityError(NimaError):
    """A plugin was asked for something it does not declare (a dtype, a device, backward...)."""


class ConfigError(NimaError, ValueError):
    """A gin file, binding or parameter value that cannot be parsed or used."""


class DataError(NimaError):
    """Missing, corrupt or unreachable data."""


class RunDirError(NimaError):
    """A run directory that cannot be used (it already holds another run, or is incomplete)."""


class CheckpointError(NimaError):
    """A checkpoint or tokenizer file that is missing, truncated or of another kind."""
