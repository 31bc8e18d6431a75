"""A tiny GPT trained with attention.triton (and Triton RoPE) follows the loss curve it follows
with attention.reference (and PyTorch RoPE): same init, same batch, step by step; and every
parameter gradient of the model agrees.

On CPU the kernels run under the Triton interpreter (tests/conftest.py); head_dim 8 also
exercises the kernel's in-kernel padding of head dims below 16. At GPT-2 init attention barely
moves the loss, so the gradient check is the sharp one; the last test shows it can fail.
"""

from __future__ import annotations

import pytest
import torch

import nima
from nima.models.gpt import GPT
from nima.train.objectives import causal_lm

STEPS = 6
VOCAB, CONTEXT, BATCH = 32, 16, 2
# fp32 kernels differ from the reference by ~1e-7 relative per call; through the model and
# six AdamW steps that stays far below 1e-4, while a wrong gradient anywhere is far above it.
TOLERANCE = 1e-4

needs_triton = pytest.mark.skipif(
    "cpu" not in nima.entry("attention", "triton").capabilities["devices"]
    and not torch.cuda.is_available(),
    reason="attention.triton needs CUDA or TRITON_INTERPRET=1",
)


class NonCausal(torch.nn.Module):
    """A deliberately wrong kernel (sees future keys), to show the comparison can fail."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = nima.get("attention", "reference")()

    def forward(self, q, k, v, *, causal, scale=None, key_padding_mask=None, bias=None):
        return self.inner(
            q, k, v, causal=False, scale=scale, key_padding_mask=key_padding_mask, bias=bias
        )


def tiny_gpt(attention: torch.nn.Module, positional: str) -> GPT:
    torch.manual_seed(0)
    return GPT(
        vocab_size=VOCAB, context_length=CONTEXT, d_model=16, n_layers=2, n_heads=2,
        n_kv_heads=1, attention=attention, positional=nima.get("positional", positional),
    )  # fmt: skip


def batch() -> torch.Tensor:
    """One batch of random tokens (B, N + 1); seen every step, so the model can memorise it."""
    return torch.randint(0, VOCAB, (BATCH, CONTEXT + 1), generator=torch.Generator().manual_seed(1))


def gradients(model: GPT) -> dict[str, torch.Tensor]:
    tokens = batch()
    loss = causal_lm(model, tokens[:, :-1], tokens[:, 1:])
    loss.backward()
    return {name: p.grad.clone() for name, p in model.named_parameters()}


def gradient_mismatches(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> list[str]:
    """Parameters whose gradient differs by more than TOLERANCE relative to its largest entry."""
    bad = []
    for name, ref in want.items():
        err = (got[name] - ref).abs().max().item() / max(ref.abs().max().item(), 1e-30)
        if not err <= TOLERANCE:
            bad.append(f"{name}: relative error {err:.2e}")
    return bad


def train_losses(model: GPT) -> list[float]:
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    tokens, losses = batch(), []
    for _ in range(STEPS):
        loss = causal_lm(model, tokens[:, :-1], tokens[:, 1:])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


@needs_triton
def test_triton_model_gradients_match_reference():
    want = gradients(tiny_gpt(nima.get("attention", "reference")(), "rope"))
    got = gradients(tiny_gpt(nima.get("attention", "triton")(), "rope_triton"))
    assert not gradient_mismatches(got, want)


@needs_triton
def test_triton_follows_the_reference_loss_curve():
    reference = train_losses(tiny_gpt(nima.get("attention", "reference")(), "rope"))
    fused = train_losses(tiny_gpt(nima.get("attention", "triton")(), "rope_triton"))
    print("reference:", reference, "\ntriton:   ", fused)
    assert reference[-1] < reference[0] - 0.3, "the tiny model did not learn: the test is void"
    for step, (want, got) in enumerate(zip(reference, fused, strict=True)):
        assert abs(got - want) <= TOLERANCE * abs(want), f"step {step}: {got} vs {want}"


def test_gradient_check_catches_a_wrong_kernel():
    want = gradients(tiny_gpt(nima.get("attention", "reference")(), "rope"))
    got = gradients(tiny_gpt(NonCausal(), "rope"))
    assert any("qkv" in line for line in gradient_mismatches(got, want))
