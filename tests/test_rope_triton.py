"""Fused Triton RoPE against the PyTorch `rope` reference: values, gradients, out-of-place writes.

Without CUDA the kernel runs on CPU tensors through the Triton interpreter (tests/conftest.py sets
TRITON_INTERPRET=1 before any kernel is imported); fp16/bf16 and large cases need a GPU.
"""

from __future__ import annotations

import subprocess
import sys

import nima_positional.rope_triton as rt
import pytest
import torch
from nima_positional.rope import RoPE, RoPETriton

from nima.capabilities import triton_devices
from nima.errors import CapabilityError
from nima.testing.positional import RopeCase, check_rope_parity

CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"

# (B, H, Hkv, N, D): odd lengths, odd and GQA head counts, head dims whose half is no power of 2
SHAPES = [
    (1, 1, 1, 1, 2),
    (2, 3, 3, 7, 8),
    (2, 5, 1, 33, 24),
    (1, 7, 7, 17, 64),
    (3, 6, 2, 10, 16),
]


def pair(head_dim: int, max_len: int = 64) -> tuple[RoPE, RoPETriton]:
    return RoPE(head_dim=head_dim, max_len=max_len), RoPETriton(head_dim=head_dim, max_len=max_len)


@pytest.fixture
def poisoned(monkeypatch):
    """Every output buffer the kernel fills (forward and backward) starts as NaN."""

    def nan_output(x: torch.Tensor) -> torch.Tensor:
        return torch.full(x.shape, float("nan"), dtype=x.dtype, device=x.device)

    monkeypatch.setattr(rt, "_new_output", nan_output)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "B{}_H{}_Hkv{}_N{}_D{}".format(*s))
@pytest.mark.parametrize("positions", ["arange", "offset", "per_batch"])
def test_matches_rope_values_and_gradients(shape, positions, poisoned):
    B, H, Hkv, N, D = shape
    ref, fused = pair(D)
    offset = 40 if positions == "offset" else 0  # with N = 33, runs past the cache (max_len 64)
    case = RopeCase(B, H, Hkv, N, positions, offset=offset, strided=H % 2 == 1)
    errors = check_rope_parity(
        fused.to(DEVICE).rotate,
        head_dim=D,
        cases=(case,),
        reference=ref.to(DEVICE).rotate,
        device=DEVICE,
    )
    print(f"{shape} {positions}: {errors}")


def test_conformance_kit_default_cases(poisoned):
    _, fused = pair(16)
    errors = check_rope_parity(fused.to(DEVICE).rotate, head_dim=16, device=DEVICE)
    print(f"default cases: {errors}")


def test_out_of_place_and_every_element_written(poisoned):
    _, fused = pair(8)
    q = torch.randn(2, 3, 9, 8, device=DEVICE, requires_grad=True)
    k = torch.randn(2, 1, 9, 8, device=DEVICE, requires_grad=True)
    q_before, k_before = q.detach().clone(), k.detach().clone()
    q_rot, k_rot = fused.rotate(q, k, torch.arange(9) + 3)
    assert torch.equal(q.detach(), q_before) and torch.equal(k.detach(), k_before)
    assert q_rot.data_ptr() != q.data_ptr() and k_rot.data_ptr() != k.data_ptr()
    assert not (q_rot.isnan().any() or k_rot.isnan().any())
    q_rot.square().sum().backward()  # k_rot unused: its gradient arrives as zeros
    assert not q.grad.isnan().any() and torch.equal(k.grad, torch.zeros_like(k))


def test_backward_is_rotation_by_minus_theta():
    _, fused = pair(16)
    q = torch.randn(1, 2, 5, 16, device=DEVICE, requires_grad=True)
    positions = torch.arange(5) + 11
    q_rot, _ = fused.rotate(q, q.detach(), positions)
    (grad,) = torch.autograd.grad(q_rot, q, q_rot.detach())  # R(-theta) R(theta) q = q
    torch.testing.assert_close(grad, q.detach(), atol=1e-6, rtol=1e-6)


def test_rejects_what_it_cannot_do(monkeypatch):
    _, fused = pair(8)
    q = torch.randn(1, 2, 3, 8, device=DEVICE, dtype=torch.float64)
    with pytest.raises(TypeError, match="supports"):
        fused.rotate(q, q, torch.arange(3))
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert triton_devices() == ["cuda"]
    with pytest.raises(CapabilityError, match="TRITON_INTERPRET=1"):
        fused.rotate(torch.randn(1, 2, 3, 8), torch.randn(1, 2, 3, 8), torch.arange(3))
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert triton_devices() == ["cuda", "cpu"]


def test_package_imports_without_triton():
    code = (
        "import sys; sys.modules['triton'] = None\n"  # `import triton` now fails
        "import nima, torch\n"
        "assert nima.entry('positional', 'rope_triton').capabilities['devices'] == []\n"
        "try:\n"
        "    nima.get('positional', 'rope_triton')(head_dim=8, max_len=4).rotate("
        "torch.zeros(1, 1, 2, 8), torch.zeros(1, 1, 2, 8), torch.arange(2))\n"
        "except nima.NimaError as e:\n"
        "    assert 'triton is not installed' in str(e), e\n"
        "else:\n"
        "    raise AssertionError('rotate ran without triton')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.gpu  # skipped without CUDA (tests/conftest.py)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("D", [64, 128])
def test_low_precision_on_gpu(dtype, D):
    ref, fused = pair(D, max_len=4096)
    cases = (RopeCase(4, 32, 8, 1000, "arange"), RopeCase(2, 12, 4, 129, "per_batch", strided=True))
    errors = check_rope_parity(
        fused.cuda().rotate, head_dim=D, cases=cases, dtype=dtype, device="cuda",
        reference=ref.cuda().rotate, max_len=4096,
    )  # fmt: skip
    print(f"{dtype} D={D}: {errors}")
