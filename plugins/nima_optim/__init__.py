"""Built-in NIMA optimizer and scheduler plugins, registered through the `nima` entry-point group."""

from nima import hookimpl
from nima_optim.optim import adam, adamw, constant, cosine, sgd


@hookimpl
def nima_register(registry) -> None:
    """Register the built-in optimizers and schedulers."""
    registry.optimizer("adamw", adamw)
    registry.optimizer("adam", adam)
    registry.optimizer("sgd", sgd)
    registry.scheduler("cosine", cosine)
    registry.scheduler("constant", constant)
