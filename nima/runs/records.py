"""Reading what runs wrote (summary.json, run.json, metrics.jsonl): the one reader of a run's
results, for `nima plot`, `nima compare` and studies. Nothing here imports the trainer."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nima.errors import RunDirError


@dataclass(frozen=True)
class RunRecord:
    """A run directory's results; `summary` is None until the run has finished."""

    run_dir: Path
    summary: dict[str, Any] | None
    info: dict[str, Any]  # run.json ({} before the run has written it)
    metrics: list[dict[str, Any]]

    @property
    def finished(self) -> bool:
        return self.summary is not None

    def curve(self, key: str) -> dict[int, float]:
        """The logged values of `key` (train_loss, val_loss, ...) by step."""
        return {r["step"]: r[key] for r in self.metrics if key in r}


def read_run(run_dir: str | Path) -> RunRecord:
    """The run's record; a summary of an interrupted run does not count as finished."""
    run_dir = Path(run_dir)
    summary = _read_json(run_dir / "summary.json")
    if summary is not None and summary.get("interrupted"):
        summary = None
    return RunRecord(
        run_dir, summary, _read_json(run_dir / "run.json") or {}, read_metrics(run_dir)
    )


def is_finished(run_dir: Path) -> bool:
    """A run is finished when it wrote summary.json and was not interrupted."""
    summary = _read_json(run_dir / "summary.json")
    return summary is not None and not summary.get("interrupted")


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """metrics.jsonl's records; a last line still being written is left out."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            break  # only the line a live run is appending can be partial
    return records


def require_run(run_dir: Path) -> RunRecord:
    """A run that has logged losses, or a RunDirError saying what `run_dir` is instead."""
    if not run_dir.is_dir():
        what = "is a file, not a folder" if run_dir.exists() else "does not exist"
        raise RunDirError(f"Run directory {run_dir} {what}; give a folder `nima run` wrote.")
    record = read_run(run_dir)
    if not record.curve("train_loss") and not record.curve("val_loss"):
        raise RunDirError(
            f"{run_dir} has no logged losses (metrics.jsonl with train_loss or val_loss is "
            f"missing or empty); give a folder `nima run` wrote, after its first logged step."
        )
    return record


def _read_json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None
