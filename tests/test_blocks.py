"""The shared blocks: norm and mlp plugins against their written-out formulas (every dtype,
odd lengths, gradients), their init, their registration and selection in GPT, and the attention
layer's cross-attention and non-causal modes against plain math."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import nima
from nima.models.blocks import AttentionLayer, GeluMLP, LayerNorm, ReLU2, RMSNorm, SwiGLU
from nima.models.gpt import GPT
from nima.testing.layers import (
    check_layer_parity,
    layernorm_reference,
    mlp_reference,
    rmsnorm_reference,
)
from nima.train.objectives import next_token_loss

DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16]
MLP_SIZES = dict(d_model=24, hidden=40, dropout=0.0, residual_std=0.01)

NORMS = [
    ("layernorm", lambda bias: LayerNorm(d_model=24, bias=bias), layernorm_reference(1e-5)),
    ("rmsnorm", lambda bias: RMSNorm(d_model=24, bias=bias), rmsnorm_reference(1e-6)),
]
MLPS = [
    ("gelu", GeluMLP, mlp_reference("gelu")),
    ("swiglu", SwiGLU, mlp_reference("swiglu")),
    ("relu2", ReLU2, mlp_reference("relu2")),
]


@pytest.mark.parametrize("name, build, reference", NORMS, ids=[n for n, *_ in NORMS])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_norms_match_their_formula(name, build, reference, bias, dtype):
    errors = check_layer_parity(build(bias), reference, dtype=dtype)
    print(f"norm.{name} bias={bias} {dtype}: {errors}")


@pytest.mark.parametrize("name, cls, reference", MLPS, ids=[n for n, *_ in MLPS])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_mlps_match_their_formula(name, cls, reference, bias, dtype):
    errors = check_layer_parity(cls(**MLP_SIZES, bias=bias), reference, dtype=dtype)
    print(f"mlp.{name} bias={bias} {dtype}: {errors}")


def test_the_check_catches_a_near_miss():
    """GELU's tanh approximation differs from the exact GELU by ~1e-3: fp32 parity must see it."""

    class TanhGelu(GeluMLP):
        def activate(self, h):
            return F.gelu(h, approximate="tanh")

    with pytest.raises(AssertionError, match="max relative error"):
        check_layer_parity(TanhGelu(**MLP_SIZES), mlp_reference("gelu"))
    with pytest.raises(AssertionError, match="dweight"):  # a gain that gets no gradient
        check_layer_parity(LayerNorm(d_model=24, bias=True), lambda x, p: layernorm_reference()(
            x, {"weight": p["weight"].detach(), "bias": p["bias"]}
        ))  # fmt: skip


def test_each_module_owns_its_init():
    torch.manual_seed(0)
    for norm in (LayerNorm(d_model=64, bias=True), RMSNorm(d_model=64)):
        with torch.no_grad():
            for p in norm.parameters():
                p.fill_(7.0)
        norm.reset_parameters()
        assert torch.all(norm.weight == 1)
        assert getattr(norm, "bias", None) is None or torch.all(norm.bias == 0)
    for cls in (GeluMLP, SwiGLU, ReLU2):
        mlp = cls(d_model=256, hidden=1024, bias=True, residual_std=0.005)
        mlp.reset_parameters()
        assert abs(mlp.fc.weight.std().item() - 0.02) < 0.001
        assert abs(mlp.proj.weight.std().item() - 0.005) < 0.0003
        assert torch.all(mlp.fc.bias == 0) and torch.all(mlp.proj.bias == 0)
    assert SwiGLU(d_model=8, hidden=16).fc.out_features == 32  # gate and up


@pytest.mark.parametrize("family, names", [("norm", ["layernorm", "rmsnorm"]),
                                           ("mlp", ["gelu", "relu2", "swiglu"])])  # fmt: skip
def test_registered_in_their_families(family, names):
    assert [e.name for e in nima.plugins(family)] == names
    for name in names:
        entry = nima.entry(family, name)
        assert entry.package == "nima" and entry.capabilities["backward"]


@pytest.mark.parametrize("norm", ["layernorm", "rmsnorm"])
@pytest.mark.parametrize("mlp", ["gelu", "swiglu", "relu2"])
def test_gpt_builds_and_trains_with_each_norm_and_mlp(norm, mlp):
    torch.manual_seed(0)
    model = GPT(
        vocab_size=37, context_length=16, d_model=32, n_layers=2, n_heads=4,
        attention=nima.get("attention", "sdpa")(), positional=nima.get("positional", "rope"),
        norm=nima.get("norm", norm), mlp=nima.get("mlp", mlp),
    )  # fmt: skip
    assert all(isinstance(b.mlp, nima.get("mlp", mlp)) for b in model.blocks)
    assert isinstance(model.norm, nima.get("norm", norm))
    idx, targets = torch.randint(0, 37, (2, 2, 11))
    loss = next_token_loss(model(idx), targets)
    assert abs(loss.item() - torch.log(torch.tensor(37.0)).item()) < 0.3  # near uniform at init
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())


def test_swiglu_at_eight_thirds_has_gelus_parameter_count():
    def count(mlp, ratio):
        return GPT(
            vocab_size=37, context_length=16, d_model=96, n_layers=2, n_heads=4, mlp_ratio=ratio,
            attention=nima.get("attention", "sdpa")(), positional=nima.get("positional", "rope"),
            mlp=mlp,
        ).num_parameters()  # fmt: skip

    assert count(SwiGLU, 8 / 3) == count(GeluMLP, 4.0)


def test_gpt_defaults_are_gpt2s_layernorm_and_gelu():
    model = GPT(vocab_size=11, context_length=8, d_model=16, n_layers=1, n_heads=2,
                attention=nima.get("attention", "sdpa")(), positional=nima.get("positional", "rope"))  # fmt: skip
    assert type(model.norm) is LayerNorm and type(model.blocks[0].mlp) is GeluMLP


# --- the attention layer --------------------------------------------------------------------


def plain_attention(q, k, v, causal, mask=None):
    """softmax(q k^T / sqrt(D)) v with K/V repeated per query head; mask (B, Nk)."""
    group = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
    scores = q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5
    visible = torch.ones(scores.shape[-2:], dtype=torch.bool)
    if causal:
        visible = visible.tril(diagonal=k.shape[2] - q.shape[2])
    visible = visible & (mask[:, None, None, :] if mask is not None else True)
    return scores.masked_fill(~visible, -torch.inf).softmax(dim=-1) @ v


def test_cross_attention_reads_keys_and_values_from_memory():
    torch.manual_seed(0)
    layer = AttentionLayer(32, 4, 2, nima.get("attention", "sdpa")(), causal=False, cross=True)
    layer.reset_parameters()
    x, memory = torch.randn(2, 5, 32), torch.randn(2, 9, 32)
    mask = torch.ones(2, 9, dtype=torch.bool)
    mask[1, 6:] = False
    got = layer(x, memory=memory, key_padding_mask=mask)
    q = layer.q(x).view(2, 5, 4, 8).transpose(1, 2)
    k, v = layer.kv(memory).view(2, 9, 2, 2, 8).unbind(dim=2)  # (B, M, Hkv, D) each
    y = plain_attention(q, k.transpose(1, 2), v.transpose(1, 2), causal=False, mask=mask)
    torch.testing.assert_close(got, layer.proj(y.transpose(1, 2).reshape(2, 5, 32)))
    with pytest.raises(ValueError, match="memory"):
        layer(x)


@pytest.mark.parametrize("causal", [True, False])
def test_self_attention_layer_is_plain_attention(causal):
    torch.manual_seed(0)
    layer = AttentionLayer(32, 4, 1, nima.get("attention", "reference")(), causal=causal)
    layer.reset_parameters()
    x = torch.randn(2, 7, 32)
    q, k, v = layer.qkv(x).split([32, 8, 8], dim=-1)
    q, k, v = (t.view(2, 7, -1, 8).transpose(1, 2) for t in (q, k, v))
    y = plain_attention(q, k, v, causal=causal)
    want = layer.proj(y.transpose(1, 2).reshape(2, 7, 32))
    torch.testing.assert_close(layer(x), want)


def test_each_layer_owns_its_attention_instance():
    """The configured instance is a template: each layer gets its own copy (per-layer state)."""
    configured = nima.get("attention", "sdpa")()
    model = GPT(vocab_size=11, context_length=8, d_model=16, n_layers=3, n_heads=2,
                attention=configured, positional=nima.get("positional", "rope"))  # fmt: skip
    instances = [b.attn.attention for b in model.blocks]
    assert len({id(a) for a in instances}) == 3 and configured not in instances
    assert [f for f, _ in model.plugins()].count("attention") == 3
