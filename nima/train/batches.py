"""Batches of token windows: what the causal-LM and masked-LM objectives train on.

`Batches` draws random windows of one split from a seeded generator (repeatable on CPU, and
resumable: the trainer saves the generator's state). `full_split_batches` cuts a whole split
into consecutive windows for the final evaluation.
"""

from __future__ import annotations

import numpy as np
import torch

from nima.errors import DataError

Batch = tuple[torch.Tensor, ...]


class Batches:
    """Random (x, y) windows of one split, from a seeded generator (repeatable on CPU).

    Each optimizer step draws `batch_size x accumulation x world` offsets at once and this
    process takes its `accumulation` micro-batches from its rank's share: the windows of a
    step do not depend on how they are split into micro-batches and processes. Subclasses
    change what a window becomes (`windows`), e.g. masked inputs and their labels.
    """

    def __init__(
        self,
        ids: np.ndarray,
        context: int,
        batch_size: int,
        seed: int,
        device,
        accumulation: int = 1,
        world: int = 1,
        rank: int = 0,
    ):
        if len(ids) <= context + 1:
            raise DataError(
                f"A split of {len(ids)} tokens is too short for windows of {context + 1} tokens "
                f"(the model's context_length + 1): use more data or a shorter context_length."
            )
        self.data = torch.from_numpy(np.asarray(ids, dtype=np.int64))
        self.context, self.batch_size, self.device = context, batch_size, device
        self.accumulation, self.world, self.rank = accumulation, world, rank
        self.generator = torch.Generator().manual_seed(seed)

    def offsets(self, n: int) -> torch.Tensor:
        return torch.randint(len(self.data) - self.context - 1, (n,), generator=self.generator)

    def windows(self, offsets: torch.Tensor) -> Batch:
        """The windows at `offsets` (n,), on the CPU: (x, y), each (n, context)."""
        chunk = self.data[offsets[:, None] + torch.arange(self.context + 1)]  # (n, context + 1)
        return chunk[:, :-1], chunk[:, 1:]

    def next(self) -> Batch:
        return tuple(t.to(self.device) for t in self.windows(self.offsets(self.batch_size)))

    def next_step(self) -> list[Batch]:
        """This process's micro-batches of the next optimizer step: every rank builds the whole
        step's windows (any random draw in them too, e.g. masks) and keeps its share."""
        step = self.windows(self.offsets(self.batch_size * self.accumulation * self.world))
        shares = [
            t.view(self.world, self.accumulation, self.batch_size, -1)[self.rank] for t in step
        ]
        return [tuple(t[i].to(self.device) for t in shares) for i in range(self.accumulation)]


def full_split_batches(ids: np.ndarray, context: int, batch_size: int, device) -> list[Batch]:
    """The whole split as consecutive windows (every token predicted once), batched."""
    data = torch.from_numpy(np.asarray(ids, dtype=np.int64))
    n = (len(data) - 1) // context
    x = data[: n * context].view(n, context)
    y = data[1 : n * context + 1].view(n, context)
    batches = [(x[i : i + batch_size], y[i : i + batch_size]) for i in range(0, n, batch_size)]
    tail = len(data) - 1 - n * context  # the last partial window
    if tail > 0:
        batches.append((data[n * context : -1][None], data[n * context + 1 :][None]))
    return [(bx.to(device), by.to(device)) for bx, by in batches]
