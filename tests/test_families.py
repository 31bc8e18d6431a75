"""Every attention, positional, norm and mlp plugin works in all three model families unchanged:
GPT (objective.causal_lm), BERT (objective.masked_lm) and Seq2Seq (objective.seq2seq) each train
a few steps with the example plugin package's attention (examples/plugin-package's softcap,
registered through its own nima_register hook, as the entry point would) and every built-in
positional, norm and mlp plugin, after passing the capability check."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import nima
from nima.capabilities import check_model
from nima.hooks import Registrar, reset
from nima.train.objectives import CausalLM, MaskedLM
from nima.train.seq2seq import Pairs, Seq2SeqObjective

EXAMPLE_SRC = Path(__file__).resolve().parents[1] / "examples" / "plugin-package" / "src"
POSITIONALS = ["none", "learned", "sinusoidal", "rope", "rope_triton", "alibi"]
NORMS, MLPS = ["layernorm", "rmsnorm"], ["gelu", "swiglu", "relu2"]
V, CONTEXT = 40, 16


@pytest.fixture(scope="module")
def system():
    """The plugin system with the example package registered by its own hook."""
    sys.path.insert(0, str(EXAMPLE_SRC))
    try:
        import nima_example
    finally:
        sys.path.remove(str(EXAMPLE_SRC))
    plugins = reset()
    if "softcap" not in plugins.registries["attention"]:  # not pip-installed here
        nima_example.nima_register(Registrar(plugins.registries, "nima-example"))
    return plugins


class Data:
    """What an objective's prepare() reads: token splits and a tokenizer with a mask token."""

    def __init__(self) -> None:
        self.tokenizer = nima.get("tokenizer", "char")(special_tokens=["<mask>"])
        self.tokenizer.train("".join(chr(ord("A") + i) for i in range(V - 5)))
        assert self.tokenizer.vocab_size == V
        pattern = np.arange(5, V)  # a repeating sequence: easy to learn in a few steps
        self.splits = {"train": np.tile(pattern, 20), "val": np.tile(pattern, 5)}


def copy_pairs(tokenizer, n: int = 64) -> dict[str, Pairs]:
    """Source -> the same tokens reversed: a task an encoder-decoder learns quickly."""
    rng = np.random.default_rng(0)
    sources = [rng.integers(5, V, size=rng.integers(3, 9)).tolist() for _ in range(n)]
    pairs = Pairs(sources, [s[::-1] for s in sources], [], tokenizer.pad_id, tokenizer.sos_id,
                  tokenizer.eos_id)  # fmt: skip
    return {"train": pairs, "val": pairs}


def build(family: str, system, positional: str, norm: str, mlp: str) -> torch.nn.Module:
    get = system.registries
    torch.manual_seed(0)
    cls = get["model"].get(family)
    return cls(
        vocab_size=V, context_length=CONTEXT, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2,
        attention=get["attention"].get("softcap")(cap=20.0),
        positional=get["positional"].get(positional), norm=get["norm"].get(norm),
        mlp=get["mlp"].get(mlp),
    )  # fmt: skip


@pytest.mark.parametrize("family", ["gpt", "bert", "seq2seq"])
@pytest.mark.parametrize(
    "positional",  # rope_triton runs its kernel through Triton's interpreter on CPU: ~20 s each
    [p if p != "rope_triton" else pytest.param(p, marks=pytest.mark.slow) for p in POSITIONALS],
)
def test_each_family_trains_with_the_example_attention_and_every_plugin(
    family: str, positional: str, system
) -> None:
    i = POSITIONALS.index(positional)
    norm, mlp = NORMS[i % len(NORMS)], MLPS[i % len(MLPS)]  # every norm and mlp comes round
    model = build(family, system, positional, norm, mlp)
    check_model(model, system.registries, device="cpu", dtype="float32")  # every layer's plugins
    attentions = [p for f, p in model.plugins() if f == "attention"]
    assert attentions and all(type(a).__name__ == "SoftcapAttention" for a in attentions)
    assert len({id(a) for a in attentions}) == len(attentions)  # each layer its own copy

    data = Data()
    objective = {"gpt": CausalLM(), "bert": MaskedLM(), "seq2seq": Seq2SeqObjective()}[family]
    splits = copy_pairs(data.tokenizer) if family == "seq2seq" else objective.prepare(data)
    batches = objective.batches(splits["train"], context=CONTEXT, batch_size=8, seed=0,
                                device="cpu")  # fmt: skip
    fixed = batches.next()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(8):
        loss = objective.loss(model, fixed)
        optimizer.zero_grad()
        loss.backward()
        assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
        optimizer.step()
        losses.append(loss.item())
    assert all(np.isfinite(losses)) and losses[-1] < 0.9 * losses[0], losses
