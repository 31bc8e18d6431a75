"""The GPT model: shapes, causality, tying, GQA, every positional plugin, init, host syncs and
its errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

import nima
from nima.models.gpt import GPT
from nima.models.positional import Positional
from nima.train.objectives import next_token_loss

ROOT = Path(__file__).resolve().parents[1]
POSITIONALS = ["rope", "rope_triton", "alibi", "learned", "sinusoidal", "none"]


def make(**overrides) -> GPT:
    options = dict(vocab_size=37, context_length=16, d_model=32, n_layers=2, n_heads=4)
    options.update(overrides)
    options.setdefault("attention", nima.get("attention", "sdpa")())
    options.setdefault("positional", nima.get("positional", "rope"))
    return GPT(**options)


@pytest.mark.parametrize("positional", ["rope", "alibi", "learned", "sinusoidal", "none"])
def test_forward_shapes_and_loss(positional: str) -> None:
    torch.manual_seed(0)
    model = make(positional=nima.get("positional", positional))
    idx, targets = torch.randint(0, 37, (2, 3, 11))
    logits = model(idx)
    loss = next_token_loss(logits, targets)
    assert logits.shape == (3, 11, 37)
    assert model(idx, last_only=True).shape == (3, 1, 37)
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
    a, b = model(idx), model(changed)
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
    model = make(d_model=256, n_layers=8, bias=True, tie_embeddings=False)
    block = model.blocks[0]
    for weight in (model.token_embedding.weight, model.lm_head.weight, block.attn.qkv.weight,
                   block.mlp.fc.weight):  # fmt: skip
        assert abs(weight.std().item() - 0.02) < 0.002
    for weight in (block.attn.proj.weight, block.mlp.proj.weight):  # 0.02 / sqrt(2 * 8)
        assert abs(weight.std().item() - 0.02 / 4) < 0.0005
    assert all(torch.all(b == 0) for n, b in model.named_parameters() if n.endswith("bias"))
    assert torch.all(block.norm1.weight == 1)


class CustomInit(Positional):
    """A plugin with its own init: a constant table, and a layer whose name ends in proj."""

    def __init__(self, **sizes: int):
        super().__init__(**sizes)
        self.table = nn.Parameter(torch.full((self.max_len, self.d_model), 3.0))
        self.xproj = nn.Linear(self.d_model, self.d_model, bias=False)
        nn.init.ones_(self.xproj.weight)

    def embed(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        return self.xproj(x + self.table[positions])


class ScaledAttention(nn.Module):
    """An attention plugin with a parameter of its own (a per-channel gain, 2-D)."""

    def __init__(self):
        super().__init__()
        self.gain = nn.Parameter(torch.full((1, 8), 0.5))

    def forward(self, q, k, v, *, causal, scale=None, key_padding_mask=None, bias=None):
        out = nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal)
        return out * self.gain


def test_plugin_parameters_keep_their_own_init() -> None:
    """GPT initialises its own modules only: not a plugin's table, nor its `xproj.weight`."""
    model = make(positional=CustomInit, attention=ScaledAttention())
    assert torch.all(model.positional.table == 3.0)
    assert torch.all(model.positional.xproj.weight == 1.0)
    assert torch.all(model.attention.gain == 0.5)
    assert all(torch.all(b.attn.attention.gain == 0.5) for b in model.blocks)


# --- host syncs and per-forward work ---------------------------------------------------------


class OpCounter(TorchDispatchMode):
    """Counts the aten ops run under it, by name; `_local_scalar_dense` is a device-to-host sync."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.counts[func.overloadpacket.__name__] += 1
        return func(*args, **(kwargs or {}))


def count_ops(fn: Callable[[], object]) -> Counter[str]:
    with OpCounter() as counter:
        fn()
    return counter.counts


def train_step(model: GPT, idx: torch.Tensor, positions: torch.Tensor | None = None) -> None:
    next_token_loss(model(idx, positions=positions), idx).backward()


@pytest.mark.parametrize("positional", POSITIONALS)
def test_forward_and_backward_never_sync(positional: str) -> None:
    """No `.item()`/`bool(tensor)` on position values: each one stalls a GPU once per layer."""
    model = make(n_layers=4, positional=nima.get("positional", positional))
    idx = torch.randint(0, 37, (2, 11))
    for positions in (None, torch.arange(11) + 3, torch.arange(22).view(2, 11) % 16):
        counts = count_ops(lambda p=positions: train_step(model, idx, p))
        assert counts["_local_scalar_dense"] == 0, f"{positional}: {counts}"
    bf16 = count_ops(lambda: model.to(torch.bfloat16)(idx))
    assert bf16["_local_scalar_dense"] == 0, f"{positional} in bf16: {bf16}"


class MasklessAttention(nn.Module):
    """Attention that adds the bias and builds no causal mask (only for counting table ops)."""

    def forward(self, q, k, v, *, causal, scale=None, key_padding_mask=None, bias=None):
        return nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=bias)


TABLE_OPS = ("cos", "sin", "index", "embedding", "gather", "index_select", "arange", "pow")


@pytest.mark.parametrize("positional", POSITIONALS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_position_tables_are_built_once_per_forward(positional: str, dtype: torch.dtype) -> None:
    """Building and gathering position tables (ALiBi's bias too) costs the same for 1 layer as
    for 4, in bf16 too. The attention plugin builds no mask of its own here (a causal mask is
    the plugin's per-layer work, not the positional's)."""

    def table_ops(n_layers: int) -> dict[str, int]:
        torch.manual_seed(0)
        model = make(
            n_layers=n_layers, positional=nima.get("positional", positional),
            attention=MasklessAttention(),
        ).to(dtype)  # fmt: skip
        counts = count_ops(lambda: model(torch.randint(0, 37, (2, 11))))
        return {op: counts[op] for op in TABLE_OPS}

    assert table_ops(1) == table_ops(4)


@pytest.mark.parametrize("positional", ["rope", "alibi", "learned", "sinusoidal", "none"])
def test_forward_compiles_without_graph_breaks(positional: str) -> None:
    """torch.compile sees one graph: nothing reads tensor values in Python (dynamo only, no codegen)."""
    model = make(positional=nima.get("positional", positional))
    explanation = torch._dynamo.explain(model)(torch.randint(0, 37, (2, 11)))
    assert explanation.graph_break_count == 0, explanation.break_reasons


def test_bf16_model_keeps_fp32_rope_angles() -> None:
    torch.manual_seed(0)
    model = make(context_length=4096, d_model=128, n_heads=2)  # head_dim 64
    positions = torch.tensor([5, 1000, 4000])
    want = model.positional.prepare(positions)
    model.to(torch.bfloat16)
    got = model.positional.prepare(positions)
    assert got.cos.dtype == torch.float32
    torch.testing.assert_close(got.cos, want.cos, atol=0, rtol=0)
    torch.testing.assert_close(got.sin, want.sin, atol=0, rtol=0)


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


def test_alibi_trains_the_smoke_experiment(shakespeare_file, tmp_path) -> None:
    """`nima run experiments/smoke.gin` with positional.alibi: trains (the loss falls well below
    the uniform ln(vocab)) and records the choice; sdpa takes the bias."""
    run_dir = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, "-m", "nima.cli", "run", "experiments/smoke.gin",
         "--bind", "GPT.positional = @positional.alibi", "--run-dir", str(run_dir), "--no-progress"],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
        env={**os.environ, "NIMA_DATA_DIR": str(shakespeare_file.parent)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["final_val_loss"] < 3.6, summary  # uniform over 65 characters: 4.17
    assert "GPT.positional = @positional.alibi" in (run_dir / "config.gin").read_text()
