"""The GPT model: shapes, causality, tying, GQA, every positional plugin, and its errors."""

from __future__ import annotations

import pytest
import torch

import nima
from nima.models.gpt import GPT


def make(**overrides) -> GPT:
    options = dict(vocab_size=37, context_length=16, d_model=32, n_layers=2, n_heads=4)
    options.update(overrides)
    options.setdefault("attention", nima.get("attention", "sdpa")())
    options.setdefault("positional", nima.get("positional", "rope"))
    return GPT(**options)


@pytest.mark.parametrize("positional", ["rope", "learned", "sinusoidal", "none"])
def test_forward_shapes_and_loss(positional: str) -> None:
    torch.manual_seed(0)
    model = make(positional=nima.get("positional", positional))
    idx, targets = torch.randint(0, 37, (2, 3, 11))
    logits, loss = model(idx, targets)
    assert logits.shape == (3, 11, 37)
    # at init the loss is close to uniform: ln(37)
    assert abs(loss.item() - torch.log(torch.tensor(37.0)).item()) < 0.3
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())


def test_causal_future_tokens_do_not_change_the_past() -> None:
    torch.manual_seed(0)
    model = make().eval()
    idx = torch.randint(0, 37, (2, 12))
    changed = idx.clone()
    changed[:, 8:] = (changed[:, 8:] + 1) % 37
    a, _ = model(idx)
    b, _ = model(changed)
    torch.testing.assert_close(a[:, :8], b[:, :8])
    assert not torch.allclose(a[:, 8:], b[:, 8:])


def test_tied_head_and_gqa_parameter_count() -> None:
    model = make(n_kv_heads=2)
    assert model.lm_head.weight is model.token_embedding.weight
    qkv = model.blocks[0].attn.qkv
    assert qkv.out_features == (4 + 2 * 2) * 8  # H q-heads + 2 x Hkv kv-heads, head_dim 8
    untied = make(tie_embeddings=False)
    assert untied.num_parameters(non_embedding=False) == (
        make().num_parameters(non_embedding=False) + 37 * 32
    )


def test_reference_model_size_matches_nanogpt() -> None:
    model = make(vocab_size=65, context_length=256, d_model=128, n_layers=4, n_heads=8)
    assert round(model.num_parameters() / 1e6, 2) == 0.79  # nanoGPT reports 0.80M with pos-emb


def test_gpt2_init_scales_residual_projections() -> None:
    torch.manual_seed(0)
    model = make(d_model=256, n_layers=8)
    assert abs(model.blocks[0].mlp.fc.weight.std().item() - 0.02) < 0.002
    assert abs(model.blocks[0].mlp.proj.weight.std().item() - 0.02 / 4) < 0.0005


@pytest.mark.parametrize(
    "overrides,message",
    [
        (dict(attention=None), "attention plugin"),
        (dict(d_model=30), "divisible"),
        (dict(n_kv_heads=3), "multiple of n_kv_heads"),
    ],
)
def test_bad_configurations(overrides: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make(**overrides)
