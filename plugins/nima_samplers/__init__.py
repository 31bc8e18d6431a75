"""Built-in NIMA sampler plugins, registered through the `nima` entry-point group."""

from nima import hookimpl
from nima_samplers.samplers import Greedy, Temperature, TopK, TopP


@hookimpl
def nima_register(registry) -> None:
    """Register the built-in samplers."""
    registry.sampler("greedy", Greedy, capabilities={"kind": "selector", "rule": "greedy"})
    registry.sampler(
        "temperature", Temperature, capabilities={"kind": "processor", "rule": "temperature"}
    )
    registry.sampler("top_k", TopK, capabilities={"kind": "processor", "rule": "top_k"})
    registry.sampler("top_p", TopP, capabilities={"kind": "processor", "rule": "top_p"})
