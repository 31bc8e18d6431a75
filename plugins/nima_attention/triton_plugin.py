"""attention.triton as a plugin: the module class and its declared capabilities.

Triton is imported lazily, on the first call, so `nima_attention` imports (and registers
`reference` and `sdpa`) on machines without triton. Without triton, `attention.triton` is still
registered, with no devices, so asking for it fails the capability check by name instead of
vanishing from the registry. On CPU it runs through Triton's interpreter, which must be enabled
with TRITON_INTERPRET=1 before triton is first imported; this package never sets it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from nima.capabilities import TRITON_INTERPRETER, triton_devices
from nima.errors import CapabilityError
from nima_attention.common import check_inputs

DTYPES = (torch.float32, torch.float16, torch.bfloat16)
CPU_DTYPES = ["float32", "float16"]  # Triton's interpreter does not widen bf16 dot operands
MAX_HEAD_DIM = 256


def capabilities() -> dict[str, Any]:
    """Declared at registration: CUDA natively, CPU only under TRITON_INTERPRET=1."""
    dtypes = [str(d).removeprefix("torch.") for d in DTYPES]
    return {
        "backward": True,
        "dtypes": dtypes,
        "devices": triton_devices(),
        "interpreter": TRITON_INTERPRETER,
        "dtypes_by_device": {"cuda": dtypes, "cpu": CPU_DTYPES},  # the interpreter: no bf16 dots
        "head_dims": range(1, MAX_HEAD_DIM + 1),  # 16/32/64/128 exact; others padded in-kernel
        "masks": ["causal", "causal_bottom_right", "key_padding"],
        "bias": False,  # no additive bias in the kernel (yet): positional.alibi needs sdpa
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
        bias: torch.Tensor | None = None,
    ) -> torch.Tensor:
        check_inputs("triton", q, k, v, key_padding_mask, bias)
        if bias is not None:
            raise CapabilityError(
                "attention.triton does not take an additive attention bias (ALiBi, relative "
                "biases): it declares bias=False. Use attention.sdpa or attention.reference."
            )
        if q.dtype not in DTYPES:
            raise CapabilityError(
                f"attention.triton supports {capabilities()['dtypes']}, got {q.dtype}; "
                "use attention.reference or attention.sdpa for it."
            )
        if q.shape[-1] > MAX_HEAD_DIM:
            raise CapabilityError(
                f"attention.triton supports head dims up to {MAX_HEAD_DIM}, got q {tuple(q.shape)}."
            )
        devices = triton_devices()
        if q.device.type not in devices:
            raise CapabilityError(
                f"attention.triton runs on {devices or 'nothing (triton is not installed)'}; "
                f"got tensors on {q.device}. CPU needs TRITON_INTERPRET=1 set before triton is "
                "imported; attention.sdpa runs anywhere."
            )
        if q.device.type == "cpu" and str(q.dtype).removeprefix("torch.") not in CPU_DTYPES:
            raise CapabilityError(
                f"attention.triton on CPU (Triton's interpreter) supports {CPU_DTYPES}, got "
                f"{q.dtype}: the interpreter computes bf16 dots wrongly. Use attention.sdpa there."
            )
        from nima_attention.triton_attention import triton_attention

        return triton_attention(
            q, k, v, causal=causal, scale=scale, key_padding_mask=key_padding_mask,
            allow_tf32=self.allow_tf32,
        )  # fmt: skip
