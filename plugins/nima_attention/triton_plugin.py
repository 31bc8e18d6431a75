"""attention.triton as a plugin: the module class and its declared capabilities.

Triton is imported lazily, on the first call, so `nima_attention` imports (and registers
`reference` and `sdpa`) on machines without triton. Without triton, `attention.triton` is still
registered, with no devices, so asking for it fails the capability check by name instead of
vanishing from the registry. On CPU it runs through Triton's interpreter, which must be enabled
with TRITON_INTERPRET=1 before triton is first imported; this package never sets it.
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any

import torch
from torch import nn

from nima.errors import CapabilityError
from nima_attention.common import check_inputs

DTYPES = (torch.float32, torch.float16, torch.bfloat16)
MAX_HEAD_DIM = 256


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def triton_available() -> bool:
    return importlib.util.find_spec("triton") is not None


def capabilities() -> dict[str, Any]:
    """Declared at registration: CUDA natively, CPU only under TRITON_INTERPRET=1."""
    devices = (["cuda"] + (["cpu"] if interpreting() else [])) if triton_available() else []
    return {
        "backward": True,
        "dtypes": [str(d).removeprefix("torch.") for d in DTYPES],
        "devices": devices,
        "head_dims": range(1, MAX_HEAD_DIM + 1),  # 16/32/64/128 exact; others padded in-kernel
        "masks": ["causal", "causal_bottom_right", "key_padding"],
        "deterministic": True,
    }


class TritonAttention(nn.Module):
    """Fused FlashAttention-style Triton kernel, forward and backward (CUDA; CPU via interpreter).

    allow_tf32: let fp32 inputs use TF32 tensor-core dots on CUDA (faster, ~1e-3 relative error).
    """

    def __init__(self, allow_tf32: bool = False) -> None:
        super().__init__()
        self.allow_tf32 = allow_tf32

    def forward(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        *,
        causal: bool,
        scale: float | None = None,
        key_padding_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        check_inputs("triton", q, k, v, key_padding_mask)
        if q.dtype not in DTYPES:
            raise CapabilityError(
                f"attention.triton supports {capabilities()['dtypes']}, got {q.dtype}; "
                "use attention.reference or attention.sdpa for it."
            )
        if q.shape[-1] > MAX_HEAD_DIM:
            raise CapabilityError(
                f"attention.triton supports head dims up to {MAX_HEAD_DIM}, got q {tuple(q.shape)}."
            )
        if not triton_available():
            raise CapabilityError(
                "attention.triton needs the triton package, which is not installed "
                "(pip install triton); attention.sdpa and attention.reference do not."
            )
        if q.device.type != "cuda" and not (q.device.type == "cpu" and interpreting()):
            raise CapabilityError(
                "attention.triton runs on CUDA, or on CPU with TRITON_INTERPRET=1 set before "
                f"triton is imported; got tensors on {q.device}. attention.sdpa runs anywhere."
            )
        from nima_attention.triton_attention import triton_attention

        return triton_attention(
            q, k, v, causal=causal, scale=scale, key_padding_mask=key_padding_mask,
            allow_tf32=self.allow_tf32,
        )  # fmt: skip
