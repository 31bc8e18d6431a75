"""lion, muon, linear and wsd: a toy problem's loss falls, state survives a checkpoint round
trip exactly, the schedules hit their values at warmup and decay boundaries, and weight decay
spares norms, biases and embeddings unless asked."""

from __future__ import annotations

import copy

import pytest
import torch
from nima_optim.optim import newton_schulz
from torch import nn

import nima
from nima.runs import read_training_state, save_checkpoint

VOCAB = 13


class Toy(nn.Module):
    """Embedding, two hidden matrices with a norm, and an untied head to the vocabulary."""

    def __init__(self) -> None:
        super().__init__()
        self.vocab_size = VOCAB
        self.embed = nn.Embedding(VOCAB, 16)
        self.hidden = nn.Sequential(nn.Linear(16, 32), nn.GELU(), nn.Linear(32, 16))
        self.norm = nn.LayerNorm(16)
        self.head = nn.Linear(16, VOCAB, bias=False)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.hidden(self.embed(idx))))


def loss_of(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return nn.functional.cross_entropy(model(x), y)


def train(model, optimizer, steps: int, seed: int = 0) -> list[float]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(VOCAB, (64,), generator=g)
    y = (x * 3 + 1) % VOCAB  # a learnable map
    losses = []
    for _ in range(steps):
        loss = loss_of(model, x, y)
        losses.append(loss.item())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return losses


@pytest.mark.parametrize("name,lr", [("lion", 3e-3), ("muon", 0.02)])
def test_lion_and_muon_learn_a_toy_problem(name: str, lr: float) -> None:
    torch.manual_seed(0)
    model = Toy()
    losses = train(model, nima.get("optimizer", name)(model, lr=lr), 60)
    assert losses[-1] < 0.5 * losses[0], losses[::10]


def test_muon_orthogonalises_hidden_matrices_only() -> None:
    model = Toy()
    optimizer = nima.get("optimizer", "muon")(model)
    muon_ids = {id(p) for g in optimizer.param_groups if g["muon"] for p in g["params"]}
    assert muon_ids == {id(model.hidden[0].weight), id(model.hidden[2].weight)}
    for g in torch.randn(32, 16), torch.randn(16, 32), torch.randn(16, 16) * 1e-3:
        s = torch.linalg.svdvals(newton_schulz(g))
        assert s.min() > 0.6 and s.max() < 1.3, s  # near 1: an approximate U V^T


@pytest.mark.parametrize("name", ["lion", "muon", "adamw"])
def test_optimizer_state_survives_a_checkpoint_exactly(tmp_path, name: str) -> None:
    torch.manual_seed(0)
    model = Toy()
    optimizer = nima.get("optimizer", name)(model)
    train(model, optimizer, 5)
    path = tmp_path / "last.safetensors"
    save_checkpoint(model, path, {}, {"optimizer": optimizer.state_dict()})

    twin = copy.deepcopy(model)
    twin_optimizer = nima.get("optimizer", name)(twin)
    twin_optimizer.load_state_dict(read_training_state(path)["optimizer"])
    assert train(model, optimizer, 4, seed=1) == train(twin, twin_optimizer, 4, seed=1)
    for a, b in zip(model.parameters(), twin.parameters(), strict=True):
        assert torch.equal(a, b)


def test_no_weight_decay_on_norms_biases_and_embeddings_by_default() -> None:
    model = Toy()
    decayed = lambda opt: {id(p) for g in opt.param_groups if g["weight_decay"] for p in g["params"]}  # noqa: E731
    for name in ("adamw", "lion", "sgd"):
        options = {"weight_decay": 0.1} if name == "sgd" else {}
        expected = {id(model.hidden[0].weight), id(model.hidden[2].weight), id(model.head.weight)}
        assert decayed(nima.get("optimizer", name)(model, **options)) == expected, name
        with_embeddings = nima.get("optimizer", name)(model, decay_embeddings=True, **options)
        assert decayed(with_embeddings) == expected | {id(model.embed.weight)}, name


def lrs(name: str, steps: int, **options) -> list[float]:
    """The lr at each of `steps` steps, then after the last one (step == total_steps)."""
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = nima.get("scheduler", name)(optimizer, steps, **options)
    out = []
    for _ in range(steps):
        out.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return out + [optimizer.param_groups[0]["lr"]]


def test_linear_warms_up_then_decays_to_the_minimum() -> None:
    values = lrs("linear", 110, warmup_steps=10, min_lr_ratio=0.1)
    assert values[0] == pytest.approx(0.1) and values[9] == pytest.approx(1.0)  # warmup
    assert values[10] == pytest.approx(1.0)  # the decay starts at the peak
    assert values[60] == pytest.approx(1 - 0.9 * 0.5)  # half-way
    assert values[110] == pytest.approx(0.1)  # the minimum at total_steps
    assert all(a >= b for a, b in zip(values[10:], values[11:], strict=False))


def test_wsd_holds_the_peak_then_decays_over_the_last_fraction() -> None:
    values = lrs("wsd", 100, warmup_steps=10, decay_fraction=0.2, min_lr_ratio=0.05)
    assert values[0] == pytest.approx(0.1) and values[9] == pytest.approx(1.0)  # warmup
    assert values[10:81] == [pytest.approx(1.0)] * 71  # stable up to the decay's start, 80
    assert values[90] == pytest.approx(1 - 0.95 * 0.5)  # half-way through the decay
    assert values[100] == pytest.approx(0.05)  # the minimum at total_steps
