"""The `train` gin configurable: everything a run is made of, selected and set from gin."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import gin


@dataclass
class TrainSettings:
    """What to train and how; each plugin-valued field is a registry reference in gin."""

    model: Callable[..., Any] | None = None  # factory: model(vocab_size=...) -> nn.Module
    dataset: Any = None  # dataset instance: splits() and checksum()
    tokenizer: Any = None  # tokenizer instance (trained on the train split if empty)
    optimizer: Callable[..., Any] | None = None  # factory: optimizer(model) -> Optimizer
    scheduler: Callable[..., Any] | None = None  # factory: scheduler(optimizer, total_steps)
    samplers: Sequence[Any] = field(default_factory=list)  # for the closing sample
    steps: int = 1000
    batch_size: int = 16
    grad_clip: float = 1.0
    eval_interval: int = 250
    eval_batches: int = 20
    final_eval: str = "full"  # "full": the whole validation split; "batches": eval_batches
    log_interval: int = 10
    seed: int = 1337
    threads: int = 0  # torch CPU threads; 0 leaves torch's default
    sample_prompt: str = "KING"
    sample_tokens: int = 300

    def missing(self, needs: tuple[str, ...]) -> list[str]:
        return [name for name in needs if getattr(self, name) is None]


gin.register("train", module="nima")(TrainSettings)
