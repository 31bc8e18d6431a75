"""`nima fill RUN_DIR --text "To be, or not to <mask>"`: a masked-LM run's top predictions at
each mask of a text (the run's tokenizer names the mask token, e.g. `<mask>`)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Annotated, Any

import torch

from nima.errors import ConfigError
from nima.validation import Range, cli_type


@torch.no_grad()
def predict_masks(
    model: torch.nn.Module, tokenizer: Any, text: str, top: int = 5
) -> list[list[tuple[str, float]]]:
    """For each mask token in `text`, the model's `top` tokens and their probabilities."""
    if getattr(model, "causal", True) is not False:
        raise ConfigError(
            f"fill needs a bidirectional model trained to fill masks (a BERT run, e.g. of "
            f"experiments/bert.gin); this run's {type(model).__name__} reads only the tokens "
            f"before each position, so its predictions at a mask would mean nothing. Sample "
            f"from it with `nima generate` instead."
        )
    mask = getattr(tokenizer, "mask_token", None)
    if mask is None:
        raise ConfigError(
            f"This run's tokenizer has no mask token (its special tokens: "
            f"{', '.join(tokenizer.special_tokens) or 'none'}): fill needs a masked-LM run, "
            f"e.g. one of experiments/bert.gin."
        )
    ids = tokenizer.encode(text, allowed_special=[mask])
    where = [i for i, t in enumerate(ids) if t == tokenizer.mask_id]
    if not where:
        raise ConfigError(f"The text {text!r} has no {mask} to fill; write {mask} where one goes.")
    if len(ids) > model.context_length:
        raise ConfigError(
            f"The text is {len(ids)} tokens long and the model reads at most "
            f"{model.context_length}; shorten it."
        )
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        logits = model(torch.tensor([ids], device=device))[0]  # (N, vocab)
    finally:
        model.train(was_training)
    probs = logits[where].float().softmax(dim=-1)  # (masks, vocab)
    special = {tokenizer.token_to_id(t) for t in tokenizer.special_tokens}
    probs[:, sorted(special)] = 0  # a mask stands for text: never a special token
    best = probs.topk(min(top, probs.shape[-1]), dim=-1)
    return [
        [(tokenizer.decode([i]), p) for i, p in zip(row_ids.tolist(), row_p.tolist(), strict=True)]
        for row_ids, row_p in zip(best.indices, best.values, strict=True)
    ]


def fill_masks(
    model: torch.nn.Module, tokenizer: Any, text: str, top: int = 5
) -> tuple[str, list[list[tuple[str, float]]]]:
    """`text` with each mask replaced by the most likely token, and every mask's predictions."""
    predictions = predict_masks(model, tokenizer, text, top)
    parts = text.split(tokenizer.mask_token)
    filled = parts[0] + "".join(
        best[0][0] + part for best, part in zip(predictions, parts[1:], strict=True)
    )
    return filled, predictions


def add_fill_arguments(subparsers: Any, parents: list[argparse.ArgumentParser] = ()) -> None:
    """Add `fill` to the `nima` subparsers."""
    fill = subparsers.add_parser(
        "fill", parents=list(parents), help="a masked-LM run's top predictions at each <mask>"
    )
    fill.add_argument("run_dir", type=Path)
    fill.add_argument("--text", required=True, help='e.g. "To be, or not to <mask>"')
    fill.add_argument("--top", type=cli_type(Annotated[int, Range(ge=1)]), default=5,
                      help="predictions per mask (default 5)")  # fmt: skip
    fill.add_argument("--checkpoint", default="best", help="best (default) or last")
    fill.add_argument("--device", default=None)
    fill.set_defaults(func=main_fill)


def main_fill(args: argparse.Namespace) -> int:
    from nima.hooks import for_command
    from nima.runs import load_run, pick_device

    system = for_command(args.disable_plugins)
    run = load_run(args.run_dir, system, pick_device(args.device), args.checkpoint)
    filled, predictions = fill_masks(run.model, run.tokenizer, args.text, args.top)
    print(filled)
    for n, row in enumerate(predictions, 1):
        shown = "  ".join(f"{token!r} {p:.3f}" for token, p in row)
        print(f"mask {n}: {shown}")
    return 0
