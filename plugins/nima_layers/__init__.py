"""Built-in norm and mlp plugins, registered through the `nima` entry-point group.

The classes live with the shared blocks (nima.models.blocks), which every model family builds
from; this package only registers them, as a third-party package registers its own:

    GPT.norm = @norm.rmsnorm     (a factory: the model calls it with d_model and bias)
    GPT.mlp = @mlp.swiglu        (a factory: d_model, hidden, bias, dropout, residual_std)
"""

from nima import hookimpl
from nima.models.blocks import GeluMLP, LayerNorm, ReLU2, RMSNorm, SwiGLU

_ANY = {"backward": True, "devices": None, "dtypes": None}


@hookimpl
def nima_register(registry) -> None:
    """Register norm.layernorm, norm.rmsnorm, mlp.gelu, mlp.swiglu and mlp.relu2."""
    registry.norm("layernorm", LayerNorm, capabilities={**_ANY, "formula": "layernorm"})
    registry.norm("rmsnorm", RMSNorm, capabilities={**_ANY, "formula": "rmsnorm"})
    registry.mlp("gelu", GeluMLP, capabilities={**_ANY, "formula": "gelu"})
    registry.mlp("swiglu", SwiGLU, capabilities={**_ANY, "formula": "swiglu"})
    registry.mlp("relu2", ReLU2, capabilities={**_ANY, "formula": "relu2"})
