"""One live display for a whole study (rich): runs done of all, and a row per run in progress.

It reads the run directories (metrics.jsonl) at each refresh rather than asking the launcher,
so it shows runs the same way wherever a launcher runs them.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from nima.runs.records import is_finished, read_metrics


class StudyProgress:
    """`with StudyProgress(runs, steps) as p: ... p.ended(name, text)` for each run that ends."""

    def __init__(self, runs: dict[str, Path], steps: int, console: Console, live: bool) -> None:
        self.runs, self.steps, self.console = dict(runs), steps, console
        self.progress = Progress(
            TextColumn("[bold]study"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("runs  {task.fields[failed]}"),
            TimeElapsedColumn(),
            console=console,
        )
        self.task = self.progress.add_task("study", total=len(runs), failed="")
        self.failed = 0
        self.live = Live(get_renderable=self._render, console=console, refresh_per_second=2,
                         transient=True) if live else None  # fmt: skip

    def __enter__(self) -> StudyProgress:
        if self.live:
            self.live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live:
            self.live.stop()

    def ended(self, name: str, ok: bool, text: str) -> None:
        """A run ended: count it and print one line about it above the display."""
        self.runs.pop(name, None)
        self.failed += not ok
        self.progress.update(
            self.task, advance=1, failed=f"({self.failed} failed)" if self.failed else ""
        )
        self.console.print(
            f"{'done  ' if ok else 'FAILED'} {name}: {text}",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )

    def _render(self) -> Group:
        table = Table("run", "step", "train loss", "val loss", box=None, padding=(0, 2))
        for name, run_dir in self.runs.items():
            if is_finished(run_dir):
                continue
            records = read_metrics(run_dir)
            if not records:
                continue
            latest = {k: v for r in records for k, v in r.items()}
            table.add_row(name, f"{latest['step']}/{self.steps}", _fmt(latest.get("train_loss")),
                          _fmt(latest.get("val_loss")))  # fmt: skip
        return Group(self.progress.get_renderable(), table)


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"
