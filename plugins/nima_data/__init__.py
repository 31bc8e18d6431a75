"""Built-in NIMA data plugins, registered through the `nima` entry-point group."""

from nima import hookimpl


@hookimpl
def nima_register(registry) -> None:
    """Register the built-in data plugins."""
