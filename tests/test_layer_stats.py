"""Per-layer gradient norms, weight norms and update ratios (nima.train.layer_stats)."""

from __future__ import annotations

import math

import pytest
import torch

import nima
from nima.models.gpt import GPT
from nima.train.layer_stats import LayerStats, layer_of


def small_gpt() -> GPT:
    torch.manual_seed(0)
    return GPT(vocab_size=23, context_length=16, d_model=16, n_layers=3, n_heads=2,
               attention=nima.get("attention", "sdpa")(),
               positional=nima.get("positional", "learned"))  # fmt: skip


def backward(model: GPT) -> None:
    idx = torch.randint(0, 23, (2, 9), generator=torch.Generator().manual_seed(1))
    torch.nn.functional.cross_entropy(model(idx).flatten(0, 1), idx.flatten()).backward()


@pytest.mark.parametrize(
    "name,layer",
    [("blocks.2.attn.qkv.weight", "blocks.2"), ("blocks.10.mlp.fc.bias", "blocks.10"),
     ("norm.weight", "norm"), ("token_embedding.weight", "token_embedding"),
     ("positional.table.weight", "positional"), ("encoder.layers.0.norm1.weight", "encoder.layers.0")],
)  # fmt: skip
def test_a_parameter_belongs_to_its_numbered_layer(name, layer):
    assert layer_of(name) == layer


def test_layers_cover_every_parameter_once_and_add_up_to_the_global_grad_norm():
    model = small_gpt()
    backward(model)
    stats = LayerStats(model)
    assert sorted(stats.layers) == [
        "blocks.0",
        "blocks.1",
        "blocks.2",
        "norm",
        "positional",
        "token_embedding",
    ]  # fmt: skip  (the tied head is the embedding)
    assert sum(len(ps) for ps in stats.layers.values()) == len(list(model.parameters()))
    metrics = stats.before_step()
    total = torch.nn.utils.get_total_norm([p.grad for p in model.parameters()])
    by_layer = math.sqrt(sum(v**2 for k, v in metrics.items() if k.startswith("grad_norm/")))
    assert by_layer == pytest.approx(float(total), rel=1e-5)
    weights = math.sqrt(sum(v**2 for k, v in metrics.items() if k.startswith("weight_norm/")))
    assert weights == pytest.approx(
        float(torch.cat([p.detach().flatten() for p in model.parameters()]).norm()), rel=1e-5
    )


def test_update_ratio_of_plain_sgd_is_lr_times_grad_over_weight():
    model = small_gpt()
    backward(model)
    stats, lr = LayerStats(model), 0.05
    before = stats.before_step()
    torch.optim.SGD(model.parameters(), lr=lr).step()
    after = stats.after_step()
    for layer in stats.layers:
        want = lr * before[f"grad_norm/{layer}"] / before[f"weight_norm/{layer}"]
        assert after[f"update_ratio/{layer}"] == pytest.approx(want, rel=1e-4), layer


def test_a_skipped_step_moves_nothing_and_after_needs_before():
    model = small_gpt()
    backward(model)
    stats = LayerStats(model)
    stats.before_step()
    assert set(stats.after_step().values()) == {0.0}
    with pytest.raises(RuntimeError, match="before_step first"):
        stats.after_step()
