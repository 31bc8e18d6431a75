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

_ALL_FLOATS = ["float32", "float64", "float16", "bfloat16"]
_MASKS = ["causal", "causal_bottom_right", "key_padding"]


@hookimpl
def nima_register(registry) -> None:
    """Register the built-in attention plugins."""
    registry.attention(
        "reference",
        ReferenceAttention,
        capabilities={"backward": True, "dtypes": _ALL_FLOATS, "devices": None,
                      "head_dims": None, "masks": _MASKS},
    )  # fmt: skip
    registry.attention(
        "sdpa",
        SdpaAttention,
        capabilities={"backward": True, "dtypes": _ALL_FLOATS, "devices": None,
                      "head_dims": None, "masks": _MASKS},
    )  # fmt: skip
    registry.attention("triton", TritonAttention, capabilities=capabilities())
