"""Built-in NIMA positional plugins, registered through the `nima` entry-point group."""

from nima import hookimpl
from nima.capabilities import TRITON_INTERPRETER, triton_devices
from nima_positional.absolute import Learned, NoPositional, Sinusoidal
from nima_positional.alibi import ALiBi
from nima_positional.rope import RoPE, RoPETriton

_ANY = {"backward": True, "devices": None}


@hookimpl
def nima_register(registry) -> None:
    """Register the built-in positional plugins."""
    registry.positional("none", NoPositional, capabilities={**_ANY, "acts_on": []})
    registry.positional("learned", Learned, capabilities={**_ANY, "acts_on": ["embed"]})
    registry.positional("sinusoidal", Sinusoidal, capabilities={**_ANY, "acts_on": ["embed"]})
    registry.positional("rope", RoPE, capabilities={**_ANY, "acts_on": ["rotate"]})
    registry.positional("alibi", ALiBi, capabilities={**_ANY, "acts_on": ["bias"]})
    registry.positional(
        "rope_triton",
        RoPETriton,
        capabilities={
            "backward": True,
            "acts_on": ["rotate"],
            "devices": triton_devices(),  # read once at registration: TRITON_INTERPRET, triton
            "interpreter": TRITON_INTERPRETER,
            "dtypes": ["float32", "float16", "bfloat16"],
        },
    )
