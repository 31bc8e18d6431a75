"""Built-in NIMA attention plugins, registered through the `nima` entry-point group.

reference  explicit einops math: the family's numerical reference
sdpa       torch scaled_dot_product_attention
triton     fused FlashAttention-style Triton kernels (imported lazily; see triton_plugin)
"""

from nima import hookimpl
from nima_attention.reference import ReferenceAttention
from nima_attention.sdpa import SdpaAttention
from nima_attention.triton_plugin import TritonAttention, capabilities

__all__ = ["ReferenceAttention", "SdpaAttention", "TritonAttention"]

# reference and sdpa: any device, any float dtype, any head dim, every mask, an additive bias
_PLAIN_TORCH = {
    "backward": True,
    "dtypes": ["float32", "float64", "float16", "bfloat16"],
    "devices": None,
    "head_dims": None,
    "masks": ["causal", "causal_bottom_right", "key_padding"],
    "bias": True,
}


@hookimpl
def nima_register(registry) -> None:
    """Register the built-in attention plugins."""
    registry.attention("reference", ReferenceAttention, capabilities=_PLAIN_TORCH)
    registry.attention("sdpa", SdpaAttention, capabilities=_PLAIN_TORCH)
    registry.attention("triton", TritonAttention, capabilities=capabilities())
