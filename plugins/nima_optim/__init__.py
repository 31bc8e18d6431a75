"""Built-in NIMA optimizer and scheduler plugins, registered through the `nima` entry-point group."""

from nima import hookimpl
from nima_optim.optim import adam, adamw, constant, cosine, linear, lion, muon, sgd, wsd


@hookimpl
def nima_register(registry) -> None:
    """Register the built-in optimizers and schedulers."""
    registry.optimizer("adamw", adamw)
    registry.optimizer("adam", adam)
    registry.optimizer("sgd", sgd)
    registry.optimizer("lion", lion)
    registry.optimizer("muon", muon)
    registry.scheduler("cosine", cosine)
    registry.scheduler("constant", constant)
    registry.scheduler("linear", linear)
    registry.scheduler("wsd", wsd)
