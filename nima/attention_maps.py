"""Attention maps: what each layer's heads attend to, as tensors and as a heatmap grid.

    from nima.attention_maps import capture_maps
    maps = capture_maps(model, ids)        # [(B, H, N, N) per self-attention layer]

    nima attention RUN_DIR --text "To be, or not" --layers 0,3 --heads 0,1 --out maps.png

Captured per layer, whatever attention plugin the layer runs: for the capture each layer's
plugin is wrapped (the model's code is untouched, and nothing stays wrapped afterwards); the
wrapper sees the exact q, k, mask and bias the layer passes (after RoPE, with ALiBi's bias) and
recomputes the probabilities with the reference math, softmax(q k^T * scale + bias) over the
visible keys, before the plugin runs as usual. A fused kernel (attention.triton, FlashAttention)
never materialises them, so this is the only way to see its maps; a plugin that computes another
function by design (softcap) is shown with the plain softmax of its inputs.

Self-attention layers only (cross-attention is not captured). `nima attention` runs models
called as model(ids) (gpt, bert); for an encoder-decoder, call capture_maps(model, ids,
source=source_ids) in Python (the encoder's and the decoder's layers, in module order).
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nima.contracts import visible_keys
from nima.errors import ConfigError


def attention_probabilities(
    q: torch.Tensor,
    k: torch.Tensor,
    *,
    causal: bool,
    scale: float | None = None,
    key_padding_mask: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """(B, H, Nq, Nk) float32 probabilities of the attention contract: q (B, H, Nq, D), k
    (B, Hkv, Nk, D); a query with no visible key gets a row of zeros."""
    H, Hkv = q.shape[1], k.shape[1]
    k = k.repeat_interleave(H // Hkv, dim=1)  # (B, H, Nk, D): GQA groups share a kv head
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    scores = (q.float() @ k.float().transpose(-1, -2)) * scale  # (B, H, Nq, Nk)
    if bias is not None:
        scores = scores + bias.float()
    visible = visible_keys(
        q.shape[2], k.shape[2], causal=causal, key_padding_mask=key_padding_mask, device=q.device
    )
    if visible is None:
        return scores.softmax(dim=-1)
    scores = scores.masked_fill(~visible, torch.finfo(scores.dtype).min)
    return scores.softmax(dim=-1) * visible  # rows with no visible key: zeros


class _Capturing(nn.Module):
    """Wraps a layer's attention plugin: records the reference probabilities, then runs it."""

    def __init__(self, plugin: Any, store: list[torch.Tensor]) -> None:
        super().__init__()
        self.plugin, self.store = plugin, store

    def forward(self, q, k, v, *, causal, scale=None, key_padding_mask=None, bias=None):
        probs = attention_probabilities(
            q, k, causal=causal, scale=scale, key_padding_mask=key_padding_mask, bias=bias
        )
        self.store.append(probs.detach().cpu())
        kwargs = dict(causal=causal, scale=scale, key_padding_mask=key_padding_mask)
        return self.plugin(q, k, v, **kwargs, **({} if bias is None else {"bias": bias}))


def _attention_layers(model: nn.Module) -> list[nn.Module]:
    """Every self-attention layer (a module with an `attention` plugin and a fused `qkv`), in
    the model's order."""
    return [m for m in model.modules() if hasattr(m, "attention") and hasattr(m, "qkv")]


@contextlib.contextmanager
def capturing(model: nn.Module) -> Iterator[list[list[torch.Tensor]]]:
    """Inside, every forward of the model records each self-attention layer's probabilities:
    yields one list per layer (one (B, H, Nq, Nk) tensor per forward)."""
    layers = _attention_layers(model)
    if not layers:
        raise ConfigError(
            f"{type(model).__name__} has no self-attention layer to capture (a module with an "
            "`attention` plugin and a `qkv` projection, as nima.models.blocks.AttentionLayer)."
        )
    stores: list[list[torch.Tensor]] = [[] for _ in layers]
    # the plugin sits in _modules (an nn.Module) or __dict__ (any callable): swap it in place
    slots = [
        layer._modules if "attention" in layer._modules else layer.__dict__ for layer in layers
    ]
    originals = [slot["attention"] for slot in slots]
    try:
        for slot, store in zip(slots, stores, strict=True):
            slot["attention"] = _Capturing(slot["attention"], store)
        yield stores
    finally:
        for slot, plugin in zip(slots, originals, strict=True):
            slot["attention"] = plugin


@torch.no_grad()
def capture_maps(model: nn.Module, ids: torch.Tensor, **forward_kwargs: Any) -> list[torch.Tensor]:
    """One forward of `ids` (B, N): the attention probabilities of every self-attention layer,
    [(B, H, N, N) float32 on the CPU per layer]."""
    was_training = model.training
    model.eval()
    try:
        with capturing(model) as stores:
            model(ids, **forward_kwargs)
    finally:
        model.train(was_training)
    return [store[-1] for store in stores]


def _pick(values: str | None, count: int, what: str) -> list[int]:
    """'0,2,-1' -> [0, 2, count - 1]; None -> all; out of range is a ConfigError."""
    if values is None:
        return list(range(count))
    try:
        picked = [int(v) for v in values.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"--{what} takes comma-separated integers, got {values!r}") from None
    bad = [i for i in picked if not -count <= i < count]
    if bad or not picked:
        raise ConfigError(
            f"--{what} {values!r}: the model has {count} {what} (0..{count - 1}; negative counts "
            "from the end)."
        )
    return [i % count for i in picked]


def plot_maps(
    maps: Sequence[torch.Tensor],
    tokens: Sequence[str],
    out: Path,
    *,
    layers: Sequence[int],
    heads: Sequence[int],
) -> Path:
    """A grid of heatmaps, a row per layer and a column per head (batch row 0), tokens on both
    axes (keys across, queries down), written atomically as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from nima import atomic

    n = len(tokens)
    size = max(2.5, 0.28 * n)
    fig, axes = plt.subplots(
        len(layers), len(heads), figsize=(size * len(heads), size * len(layers)), squeeze=False
    )
    labels = [repr(t)[1:-1].replace(" ", "␣") for t in tokens]  # spaces and newlines visible
    for row, layer in enumerate(layers):
        for col, head in enumerate(heads):
            ax = axes[row][col]
            ax.imshow(maps[layer][0, head].numpy(), vmin=0.0, vmax=1.0, cmap="viridis")
            ax.set_title(f"layer {layer}, head {head}", fontsize=9)
            ax.set_xticks(range(n), labels, rotation=90, fontsize=7)
            ax.set_yticks(range(n), labels, fontsize=7)
            ax.set_xlabel("key", fontsize=8)
            ax.set_ylabel("query", fontsize=8)
    fig.tight_layout()
    out = Path(out)
    with atomic.atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return out


# --- nima attention ----------------------------------------------------------------------------


def add_attention_arguments(
    subparsers: Any, parents: Sequence[argparse.ArgumentParser] = ()
) -> None:
    """Add `attention` to the `nima` subparsers."""
    cmd = subparsers.add_parser(
        "attention", parents=list(parents),
        help="per layer and head attention heatmaps of a text through a trained run",
    )  # fmt: skip
    cmd.add_argument("run_dir", type=Path)
    cmd.add_argument("--text", required=True, help="the text whose attention to show")
    cmd.add_argument("--layers", help="comma-separated layer indices (default: all)")
    cmd.add_argument("--heads", help="comma-separated head indices (default: all)")
    cmd.add_argument("--out", type=Path, required=True, help="PNG to write")
    cmd.add_argument("--checkpoint", choices=("best", "last"), default="best")
    cmd.add_argument("--device", help="cpu, cuda (default: cuda when present)")
    cmd.set_defaults(func=main_attention)


MAX_TOKENS = 128  # beyond this a heatmap's tick labels are unreadable


def main_attention(args: argparse.Namespace) -> int:
    import nima

    if args.out.suffix.lower() != ".png":
        raise ConfigError(f"--out must name a .png file, got {args.out}")
    loaded = nima.load(args.run_dir, args.checkpoint, args.device)
    model, tokenizer = loaded.model, loaded.tokenizer
    ids = tokenizer.encode(args.text)
    if not ids:
        raise ConfigError("--text encodes to no token: give some text.")
    limit = min(MAX_TOKENS, getattr(model, "context_length", MAX_TOKENS))
    if len(ids) > limit:
        raise ConfigError(
            f"--text is {len(ids)} tokens; at most {limit} fit one readable map (and the "
            "model's context): shorten it."
        )
    device = next(model.parameters()).device
    maps = capture_maps(model, torch.tensor([ids], device=device))
    layers = _pick(args.layers, len(maps), "layers")
    heads = _pick(args.heads, maps[0].shape[1], "heads")
    tokens = [tokenizer.decode([i]) for i in ids]
    print(plot_maps(maps, tokens, args.out, layers=layers, heads=heads))
    return 0
