"""The built-in live progress display (rich): step, loss, lr, tokens/s and ETA, then the final
evaluation's batches."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, TypeVar

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from nima.hookspecs import hookimpl

T = TypeVar("T")


class ProgressDisplay:
    """Draws on stderr; rich falls back to plain lines when it is not a terminal."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[status]}"),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
        )
        self.task = None
        self.val = ""

    @hookimpl
    def nima_train_start(self, run: Any) -> None:
        params = sum(p.numel() for p in run.model.parameters())
        self.console.print(
            f"run dir {run.run_dir}  device {run.device}  {params:,} parameters "
            f"({run.model.num_parameters():,} non-embedding)",
            highlight=False,
            soft_wrap=True,
        )
        self.task = self.progress.add_task(
            "train", total=run.total_steps, completed=run.start_step, status=""
        )
        self.progress.start()

    @hookimpl
    def nima_train_step(self, run: Any, step: int, metrics: dict[str, float]) -> None:
        status = (
            f"loss {metrics['train_loss']:.4f}  lr {metrics['lr']:.2e}  "
            f"{metrics['tokens_per_s']:,.0f} tok/s{self.val}"
        )
        self.progress.update(self.task, completed=step, status=status)
        if not self.console.is_terminal:
            self.console.print(f"step {step}/{run.total_steps}  {status}", highlight=False)

    @hookimpl
    def nima_evaluate(self, run: Any, step: int, metrics: dict[str, float]) -> None:
        self.val = f"  val {metrics['val_loss']:.4f}"
        if not self.console.is_terminal:
            self.console.print(f"step {step}: val_loss {metrics['val_loss']:.4f}", highlight=False)

    def track(self, items: Sequence[T], description: str) -> Iterator[T]:
        """Yield `items`, showing how many are done (the final evaluation's batches)."""
        if not self.console.is_terminal:
            self.console.print(f"{description}: {len(items)} batches", highlight=False)
        task = self.progress.add_task(description, total=len(items), status="")
        for item in items:
            yield item
            self.progress.advance(task)

    @hookimpl
    def nima_train_end(self, run: Any, summary: dict[str, Any]) -> None:
        self.progress.update(self.task, completed=summary["steps"])
        self.close()

    def close(self) -> None:
        self.progress.stop()  # idempotent
