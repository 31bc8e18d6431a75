"""nima-example: a third-party NIMA plugin package with one attention plugin, `softcap`.

NIMA finds this module through the `nima` entry point in pyproject.toml and calls its
`nima_register` hook once, with a registrar that stamps each entry with this package's name.
"""

from __future__ import annotations

from typing import Any

import nima

from nima_example.attention import SoftcapAttention, SoftcapError
from nima_example.reference import reference_for

__all__ = ["SoftcapAttention", "SoftcapError"]

# Declared capabilities let `nima run` refuse a config this kernel cannot serve before training
# starts, and tell `nima check` / nima.testing what to verify (their types:
# nima.capability_types.AttentionCapabilities; a misspelt key is an error). None means "any".
CAPABILITIES: dict[str, Any] = {
    "backward": True,
    "dtypes": ["float32", "float64", "float16", "bfloat16"],
    "devices": None,
    "head_dims": None,
    "masks": ["causal", "causal_bottom_right", "key_padding"],
    "bias": True,  # an additive attention bias (positional.alibi needs it)
    "reference": reference_for,  # what it must match: the softcap formula, not plain attention
}


@nima.hookimpl
def nima_register(registry: Any) -> None:
    """Register attention.softcap (gin: `GPT.attention = @attention.softcap()`)."""
    registry.attention(
        "softcap",
        SoftcapAttention,
        description="tanh logit soft-capping attention (Gemma 2); softcap.cap sets the cap",
        capabilities=CAPABILITIES,
    )
