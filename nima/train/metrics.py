"""The built-in metrics file: trainer events appended to metrics.jsonl, one JSON object per line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nima.atomic import strict_json, write_text
from nima.hookspecs import hookimpl
from nima.runs.records import read_metrics


class MetricsFile:
    """Writes {"step": ..., <fields present at that step>} lines, flushed as they come."""

    def __init__(self, path: Path | None = None) -> None:
        self.path, self._file = path, None  # default: RUN_DIR/metrics.jsonl, opened at the start
        if path is not None:
            self._file = open(path, "a")

    @hookimpl
    def nima_train_start(self, run: Any) -> None:
        if self._file is None:
            self.path = Path(run.run_dir) / "metrics.jsonl"
            self._file = open(self.path, "a")

    def _write(self, step: int, metrics: dict[str, Any]) -> None:
        self._file.write(strict_json({"step": step, **metrics}) + "\n")
        self._file.flush()

    @hookimpl
    def nima_train_step(self, run: Any, step: int, metrics: dict[str, float]) -> None:
        self._write(step, metrics)

    @hookimpl
    def nima_evaluate(self, run: Any, step: int, metrics: dict[str, float]) -> None:
        self._write(step, metrics)

    @hookimpl
    def nima_train_end(self, run: Any, summary: dict[str, Any]) -> None:
        self.close()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()  # idempotent


def truncate_metrics(run_dir: Path, step: int) -> None:
    """Drop the records after `step` (a resumed run logs them again) and a half-written last
    line (a killed run's), atomically."""
    kept = [r for r in read_metrics(run_dir) if r["step"] <= step]
    write_text(run_dir / "metrics.jsonl", "".join(strict_json(r) + "\n" for r in kept))
