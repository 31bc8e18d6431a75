"""The `train` gin configurable: everything a run is made of, selected and set from gin."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import gin

from nima.contracts import Dataset, Objective, Sampler, Tokenizer
from nima.validation import Range

Positive = Annotated[int, Range(ge=1)]


@dataclass
class TrainSettings:
    """What to train and how; each plugin-valued field is a registry reference in gin.

    The annotations are the rules: `config.parse` checks every bound value against them
    (types, `Range` bounds, `Literal` choices, factory or instance) before anything is built.
    """

    model: Callable[..., Any] | None = None  # factory: model(vocab_size=...) -> nn.Module
    dataset: Dataset | None = None  # instance: splits() and checksum()
    tokenizer: Tokenizer | None = None  # instance (trained on the train split if empty)
    optimizer: Callable[..., Any] | None = None  # factory: optimizer(model) -> Optimizer
    scheduler: Callable[..., Any] | None = None  # factory: scheduler(optimizer, total_steps)
    # instance: @objective.masked_lm(); it builds the batches and computes the loss. None:
    # next-token prediction (objective.causal_lm)
    objective: Objective | None = None
    # the model's starting weights (fine-tuning): a run directory (its best checkpoint) or a
    # .safetensors checkpoint, e.g. a Hugging Face GPT-2 made a run by `nima import`
    init_from: str | None = None
    samplers: Sequence[Sampler] = field(default_factory=list)  # instances, for the sample
    # instances: [@logger.jsonl(), @logger.progress(), @logger.tensorboard()]; None: jsonl and
    # progress. metrics.jsonl is always written (resume, plots and studies read it).
    loggers: Sequence[Any] | None = None
    steps: Positive = 1000
    batch_size: Positive = 16  # windows per micro-batch, per process
    accumulation_steps: Positive = 1  # micro-batches per optimizer step
    # autocast compute dtype; fp16: CUDA only; auto: bf16 where the device computes it natively
    precision: Literal["fp32", "bf16", "fp16", "auto"] = "fp32"
    compile: bool = False  # torch.compile the model for training steps (evaluation stays eager)
    # many processes: DDP replicas, or FSDP2 (fully_shard: parameters, gradients and optimizer
    # state sharded over the ranks); one process trains alike under either
    parallel: Literal["ddp", "fsdp"] = "ddp"
    grad_clip: Annotated[float, Range(ge=0)] = 1.0  # 0: no clipping
    # a NaN/Inf loss or gradient: stop, or skip the step
    nonfinite: Literal["stop", "skip"] = "stop"
    spike_factor: Annotated[float, Range(ge=0)] = 3.0  # warn when loss > k x running mean; 0: off
    eval_interval: Positive = 250
    eval_batches: Positive = 20
    checkpoint_interval: Annotated[int, Range(ge=0)] = 0  # `last` also every N steps; 0: at evals
    final_eval: Literal["full", "batches"] = "full"  # the whole val split, or eval_batches
    log_interval: Positive = 10
    # per-layer grad norm, weight norm and update/weight ratio every N steps (logged); 0: off
    layer_stats_interval: Annotated[int, Range(ge=0)] = 100
    seed: Annotated[int, Range(ge=0)] = 1337
    threads: Annotated[int, Range(ge=0)] = 0  # torch CPU threads; 0 leaves torch's default
    sample_prompt: str = "KING"
    sample_tokens: Annotated[int, Range(ge=0)] = 300

    def missing(self, needs: tuple[str, ...]) -> list[str]:
        return [name for name in needs if getattr(self, name) is None]


gin.register("train", module="nima")(TrainSettings)
