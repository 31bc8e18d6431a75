"""Training objectives: how token ids become batches, and a batch and the model's logits a loss.

Models return logits and know nothing of targets; the objective owns them, so the trainer names
no objective (`train.objective = @objective.masked_lm()`; unset: `causal_lm`). An objective
(family `objective`, registered by plugins/nima_objectives) has

    prepare(data, dataset) -> {split: what batches() reads}   once, before training
    batches(split_data, context=, batch_size=, seed=, device=, accumulation=, world=, rank=)
        -> a Batches-like source: next() (one batch), next_step() (this rank's micro-batches of
           one optimizer step), .generator (saved in checkpoints, so a resume draws the same)
    full_split(split_data, context=, batch_size=, device=, seed=) -> every batch of a split
    loss(model, batch) -> the mean loss (a scalar tensor), what training minimises
    measure(model, batch) -> {metric: (mean, count)}, "loss" first: evaluation weighs each
        batch's mean by its count of scored targets (padding and unmasked tokens count nothing)
    tokens(batch) -> positions the model reads (for throughput; from shapes, no host sync)
    scores_every_token: True when full_split scores each token once (bits per character apply)

and may have `sample(model, tokenizer, prompt, ...)` (what the run shows at the end, instead of
a continuation) and `report(model, tokenizer, splits)` (extra end-of-run metrics).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

import numpy as np
import torch
import torch.nn.functional as F

from nima.errors import ConfigError
from nima.train.batches import Batch, Batches, full_split_batches
from nima.validation import Range, checked

IGNORE_INDEX = -100
"""A target equal to this (padding) counts for nothing in the loss, as F.cross_entropy's default."""

Fraction = Annotated[float, Range(ge=0, le=1)]


def next_token_loss(
    logits: torch.Tensor, targets: torch.Tensor, ignore_index: int = IGNORE_INDEX
) -> torch.Tensor:
    """Mean cross-entropy of logits (B, N, V) against targets (B, N), in fp32 whatever the
    logits' dtype; targets equal to ignore_index are left out of the mean."""
    return F.cross_entropy(
        logits.flatten(0, 1).float(), targets.flatten(), ignore_index=ignore_index
    )


def causal_lm(
    model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, ignore_index: int = IGNORE_INDEX
) -> torch.Tensor:
    """The next-token objective on one batch: y (B, N) is x (B, N) shifted by one token."""
    return next_token_loss(model(x), y, ignore_index)


def scored(targets: torch.Tensor) -> int:
    """How many targets a loss averages over: those not equal to IGNORE_INDEX."""
    return int((targets != IGNORE_INDEX).sum())


def token_accuracy(logits: torch.Tensor, targets: torch.Tensor) -> float:
    """Fraction of scored targets (B, N) whose most likely token (logits (B, N, V)) is right."""
    keep = targets != IGNORE_INDEX
    right = (logits.argmax(dim=-1) == targets) & keep
    return float(right.sum()) / max(int(keep.sum()), 1)


class CausalLM:
    """Next-token prediction on random windows of the token stream (GPT)."""

    scores_every_token = True  # the full split is scored token by token: bits per char apply

    def prepare(self, data: Any, dataset: Any = None) -> dict[str, np.ndarray]:
        return data.splits

    def batches(self, ids: np.ndarray, *, context: int, batch_size: int, seed: int, device,
                accumulation: int = 1, world: int = 1, rank: int = 0) -> Batches:  # fmt: skip
        return Batches(ids, context, batch_size, seed, device, accumulation, world, rank)

    def full_split(
        self, ids: np.ndarray, *, context: int, batch_size: int, device, seed: int = 0
    ) -> list[Batch]:
        return full_split_batches(ids, context, batch_size, device)

    def loss(self, model: torch.nn.Module, batch: Batch) -> torch.Tensor:
        x, y = batch
        return causal_lm(model, x, y)

    def measure(self, model: torch.nn.Module, batch: Batch) -> dict[str, tuple[float, int]]:
        return {"loss": (self.loss(model, batch).item(), scored(batch[1]))}

    def tokens(self, batch: Batch) -> int:
        return batch[0].numel()


def mask_tokens(
    ids: torch.Tensor,
    mask_id: int,
    replacements: torch.Tensor,
    generator: torch.Generator,
    rate: float = 0.15,
    mask_fraction: float = 0.8,
    random_fraction: float = 0.1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's masking of ids (B, N): each token is selected with probability `rate` (at least one
    per row); of the selected, `mask_fraction` become mask_id, `random_fraction` a random id from
    `replacements`, the rest stay. Returns (inputs, labels): labels hold the selected tokens'
    ids and IGNORE_INDEX elsewhere."""
    B, N = ids.shape
    draw = torch.rand(B, N, generator=generator)
    selected = draw < rate  # (B, N)
    first = torch.nn.functional.one_hot(draw.argmin(dim=1), N).bool()  # each row's likeliest
    selected |= first & ~selected.any(dim=1, keepdim=True)
    how = torch.rand(B, N, generator=generator)
    random_ids = replacements[torch.randint(len(replacements), (B, N), generator=generator)]
    inputs = torch.where(selected & (how < mask_fraction), mask_id, ids)
    swap = selected & (how >= mask_fraction) & (how < mask_fraction + random_fraction)
    inputs = torch.where(swap, random_ids, inputs)
    labels = torch.where(selected, ids, IGNORE_INDEX)
    return inputs, labels


class MaskedWindows(Batches):
    """Random windows of `context` tokens, masked BERT's way: (inputs, labels)."""

    def __init__(self, ids, context, batch_size, seed, device, accumulation=1, world=1, rank=0,
                 *, masking: dict[str, Any]) -> None:  # fmt: skip
        super().__init__(ids, context, batch_size, seed, device, accumulation, world, rank)
        self.masking = masking

    def windows(self, offsets: torch.Tensor) -> Batch:
        """The windows at `offsets` (n,), masked: (inputs, labels), each (n, context)."""
        chunk = self.data[offsets[:, None] + torch.arange(self.context)]  # (n, context)
        return mask_tokens(chunk, generator=self.generator, **self.masking)


@checked
class MaskedLM:
    """BERT's masked-LM: predict the 15% selected tokens (80% masked, 10% random, 10% kept)."""

    scores_every_token = False

    def __init__(
        self,
        rate: Annotated[float, Range(gt=0, lt=1)] = 0.15,
        mask_fraction: Fraction = 0.8,
        random_fraction: Fraction = 0.1,
    ) -> None:
        if mask_fraction + random_fraction > 1:
            raise ConfigError(
                f"objective.masked_lm: mask_fraction ({mask_fraction}) + random_fraction "
                f"({random_fraction}) must be at most 1 (the rest of the selected tokens stay "
                f"as they are); BERT uses 0.8 and 0.1."
            )
        self.rate, self.mask_fraction, self.random_fraction = rate, mask_fraction, random_fraction

    def prepare(self, data: Any, dataset: Any = None) -> dict[str, Any]:
        tokenizer = data.tokenizer
        mask_id = getattr(tokenizer, "mask_id", None)
        if mask_id is None:
            raise ConfigError(
                f"objective.masked_lm needs a mask token, and this {type(tokenizer).__name__} "
                f"has none (its special tokens: {', '.join(tokenizer.special_tokens) or 'none'}). "
                f"Add one to the tokenizer, e.g. char.special_tokens = ['<mask>']."
            )
        special = {tokenizer.token_to_id(t) for t in tokenizer.special_tokens}
        ordinary = [i for i in range(tokenizer.vocab_size) if i not in special]
        masking = {
            "mask_id": mask_id,
            "replacements": torch.tensor(ordinary),  # a random replacement is an ordinary token
            "rate": self.rate,
            "mask_fraction": self.mask_fraction,
            "random_fraction": self.random_fraction,
        }
        return {split: (ids, masking) for split, ids in data.splits.items()}

    def batches(self, split: tuple, *, context: int, batch_size: int, seed: int, device,
                accumulation: int = 1, world: int = 1, rank: int = 0) -> MaskedWindows:  # fmt: skip
        ids, masking = split
        return MaskedWindows(ids, context, batch_size, seed, device, accumulation, world, rank,
                             masking=masking)  # fmt: skip

    def full_split(
        self, split: tuple, *, context: int, batch_size: int, device, seed: int = 0
    ) -> list[Batch]:
        """Consecutive windows of the whole split, each masked (a fixed draw from `seed`)."""
        ids, masking = split
        data = torch.from_numpy(np.asarray(ids, dtype=np.int64))
        n = len(data) // context
        windows = data[: n * context].view(n, context)
        generator = torch.Generator().manual_seed(seed)
        inputs, labels = mask_tokens(windows, generator=generator, **masking)
        return [
            (inputs[i : i + batch_size].to(device), labels[i : i + batch_size].to(device))
            for i in range(0, n, batch_size)
        ]

    def loss(self, model: torch.nn.Module, batch: Batch) -> torch.Tensor:
        inputs, labels = batch
        return next_token_loss(model(inputs), labels)

    def measure(self, model: torch.nn.Module, batch: Batch) -> dict[str, tuple[float, int]]:
        inputs, labels = batch
        logits = model(inputs)
        n = scored(labels)
        return {
            "loss": (next_token_loss(logits, labels).item(), n),
            "accuracy": (token_accuracy(logits, labels), n),  # of the masked tokens
        }

    def tokens(self, batch: Batch) -> int:
        return batch[0].numel()

    def sample(self, model, tokenizer, prompt: str, *args: Any, **kwargs: Any) -> str:
        """The prompt with each mask filled by the model's most likely token (after training, a
        prompt it cannot fill is said so, not raised: the run is complete and saved)."""
        from nima.fill import fill_masks

        try:
            return fill_masks(model, tokenizer, prompt, top=1)[0]
        except ConfigError as exc:
            return f"(train.sample_prompt not filled: {exc})"


def evaluate_batches(
    model: torch.nn.Module, batches: Sequence[Batch] | Any, objective: Any
) -> dict[str, float]:
    """Each of the objective's metrics over `batches`, every batch weighted by its count of
    scored targets; the model's mode is kept."""
    was_training = model.training
    model.eval()
    totals: dict[str, float] = {}
    counts: dict[str, int] = {}
    try:
        with torch.no_grad():
            for batch in batches:
                for name, (value, count) in objective.measure(model, batch).items():
                    totals[name] = totals.get(name, 0.0) + value * count
                    counts[name] = counts.get(name, 0) + count
    finally:
        model.train(was_training)
    return {name: totals[name] / counts[name] if counts[name] else float("nan") for name in totals}


def or_default(objective: Any) -> Any:
    """The run's objective: the one configured, else next-token prediction."""
    return CausalLM() if objective is None else objective
