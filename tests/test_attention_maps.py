"""Attention maps: the captured probabilities are the ones each layer's plugin used (fused
kernels included), rows sum to 1, causal zeros above the diagonal, plugins restored after the
capture; `nima attention` writes its PNG atomically and refuses bad options clearly."""

from __future__ import annotations

from pathlib import Path

import matplotlib.image
import pytest
import torch

import nima
from nima.attention_maps import _attention_layers, attention_probabilities, capture_maps, capturing
from nima.cli import main
from nima.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "experiments" / "smoke.gin"


def tiny_gpt(attention: str = "sdpa", positional: str = "rope", n_kv_heads: int = 2):
    torch.manual_seed(0)
    return nima.get("model", "gpt")(
        vocab_size=50, context_length=32, d_model=32, n_layers=2, n_heads=4,
        n_kv_heads=n_kv_heads, attention=nima.get("attention", attention)(),
        positional=nima.get("positional", positional),
    ).eval()  # fmt: skip


def outputs_from_maps(model, ids: torch.Tensor, maps: list[torch.Tensor]) -> None:
    """Each layer's output rebuilt from its captured map (proj(P @ v), v from the layer's own
    input) equals what the layer computed with its plugin: the map is the one it used."""
    layers = _attention_layers(model)
    seen = []
    hooks = [
        layer.register_forward_hook(lambda m, args, kwargs, out: seen.append((args[0], out)),
                                    with_kwargs=True)
        for layer in layers
    ]  # fmt: skip
    try:
        with torch.no_grad():
            model(ids)
    finally:
        for hook in hooks:
            hook.remove()
    for layer, (x, out), probs in zip(layers, seen, maps, strict=True):
        B, N, C = x.shape
        H, Hkv, D = layer.n_heads, layer.n_kv_heads, layer.head_dim
        v = layer.qkv(x).split([H * D, Hkv * D, Hkv * D], dim=-1)[2]
        v = v.view(B, N, Hkv, D).transpose(1, 2).repeat_interleave(H // Hkv, dim=1)
        rebuilt = layer.proj((probs @ v).transpose(1, 2).reshape(B, N, C))
        torch.testing.assert_close(rebuilt, out, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize(
    ("attention", "positional"),
    [("reference", "rope"), ("sdpa", "rope"), ("sdpa", "alibi"), ("triton", "rope")],
)
def test_maps_are_the_probabilities_each_layer_used(attention: str, positional: str) -> None:
    if (
        attention == "triton"
        and "cpu" not in nima.entry("attention", "triton").capabilities["devices"]
    ):
        pytest.skip("attention.triton needs CUDA or TRITON_INTERPRET=1")
    model = tiny_gpt(attention, positional)
    ids = torch.randint(0, 50, (2, 13), generator=torch.Generator().manual_seed(1))
    maps = capture_maps(model, ids)
    assert [m.shape for m in maps] == [(2, 4, 13, 13)] * 2
    outputs_from_maps(model, ids, maps)
    for probs in maps:
        torch.testing.assert_close(probs.sum(-1), torch.ones(2, 4, 13))  # rows sum to 1
        above = torch.ones(13, 13, dtype=torch.bool).triu(1)
        assert torch.all(probs[..., above] == 0)  # causal: exact zeros above the diagonal
        assert torch.all(probs[..., ~above] > 0)


def test_probabilities_match_the_reference_formula() -> None:
    """Against softmax written out by hand: GQA, Nq != Nk, padding, bias, a row with no key."""
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(2, 4, 3, 8, generator=g), torch.randn(2, 2, 5, 8, generator=g)
    bias = torch.randn(1, 4, 3, 5, generator=g)
    mask = torch.tensor([[True, True, False, True, True], [False] * 5])
    got = attention_probabilities(q, k, causal=True, key_padding_mask=mask, bias=bias)
    k_full = k.repeat_interleave(2, dim=1)
    scores = q @ k_full.transpose(-1, -2) / 8**0.5 + bias
    visible = torch.ones(3, 5, dtype=torch.bool).tril(2)[None, None] & mask[:, None, None, :]
    want = torch.where(visible, scores, -torch.inf).softmax(-1).nan_to_num(0.0)
    torch.testing.assert_close(got, want)
    assert torch.all(got[1] == 0)  # the second row of the batch sees no key: zeros, no NaN


def test_capture_restores_the_plugins_even_after_an_error() -> None:
    model = tiny_gpt()
    plugins = [layer.attention for layer in _attention_layers(model)]
    with pytest.raises(RuntimeError, match="inside"), capturing(model):
        assert all(
            type(layer.attention).__name__ == "_Capturing" for layer in _attention_layers(model)
        )
        raise RuntimeError("inside")
    assert [layer.attention for layer in _attention_layers(model)] == plugins
    assert model.training is False


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    from nima.hooks import reset
    from nima.train.run import run_experiment

    run_dir = tmp_path_factory.mktemp("attention-maps") / "run"
    bindings = ["train.steps = 2", "train.eval_interval = 2", "train.sample_tokens = 2"]
    run_experiment([SMOKE], bindings, reset(), run_dir=run_dir, show_progress=False)
    return run_dir


def test_cli_writes_a_grid_png(run_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "maps.png"
    code = main(["attention", str(run_dir), "--text", "To be, or", "--layers", "0,-1",
                 "--heads", "0,1", "--out", str(out)])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    assert capsys.readouterr().out.strip() == str(out)
    image = matplotlib.image.imread(out)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    assert [p.name for p in tmp_path.iterdir()] == ["maps.png"]  # no temporary file left


def test_a_failed_write_leaves_no_file(run_dir: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    """The PNG appears whole or not at all: an error while saving leaves the old file as it was."""
    import matplotlib.figure

    out = tmp_path / "maps.png"
    out.write_bytes(b"the previous maps")

    def fail_half_way(self, fname, **kwargs):
        Path(fname).write_bytes(b"\x89PNG half")
        raise OSError("disk full")

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", fail_half_way)
    with pytest.raises(OSError, match="disk full"):
        main(["attention", str(run_dir), "--text", "To be", "--out", str(out)])
    assert out.read_bytes() == b"the previous maps"
    assert [p.name for p in tmp_path.iterdir()] == ["maps.png"]


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--layers", "7"], "--layers '7': the model has 2 layers"),
        (["--heads", "a"], "--heads takes comma-separated integers"),
        (["--text", ""], "--text encodes to no token"),
    ],
)
def test_bad_options_are_one_clear_error(run_dir, tmp_path, capsys, args, says) -> None:
    argv = ["attention", str(run_dir), "--text", "To be", "--out", str(tmp_path / "m.png"), *args]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and says in err and "Traceback" not in err
    assert not (tmp_path / "m.png").exists()


def test_maps_of_a_model_without_attention_layers_is_refused() -> None:
    with pytest.raises(ConfigError, match="no self-attention layer"):
        capture_maps(torch.nn.Linear(2, 2), torch.zeros(1, 2))
