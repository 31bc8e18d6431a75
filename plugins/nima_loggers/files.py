"""Loggers that write a format another tool reads: TensorBoard event files and a CSV table."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from nima.atomic import write_text
from nima.errors import ConfigError
from nima.hookspecs import hookimpl


class TensorBoardLogger:
    """TensorBoard scalars (RUN_DIR/tensorboard): `tensorboard --logdir runs`."""

    def __init__(self, folder: str = "tensorboard") -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError(
                "@logger.tensorboard() needs the tensorboard package: pip install 'nima[tensorboard]'."
            ) from None
        self.folder, self._writer_class, self.writer = folder, SummaryWriter, None

    @hookimpl
    def nima_train_start(self, run: Any) -> None:
        # a resumed run first purges the events its killed predecessor wrote after the checkpoint
        self.writer = self._writer_class(
            str(Path(run.run_dir) / self.folder), purge_step=run.start_step + 1 if run.start_step else None
        )

    def _scalars(self, step: int, metrics: dict[str, float], prefix: str) -> None:
        for name, value in metrics.items():
            if isinstance(value, (int, float)) and value is not None:
                self.writer.add_scalar(f"{prefix}/{name}", value, step)
        self.writer.flush()

    @hookimpl
    def nima_train_step(self, run: Any, step: int, metrics: dict[str, float]) -> None:
        self._scalars(step, metrics, "train")

    @hookimpl
    def nima_evaluate(self, run: Any, step: int, metrics: dict[str, float]) -> None:
        self._scalars(step, metrics, "eval")

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class CSVLogger:
    """RUN_DIR/metrics.csv: one row per logged value (step, event, name, value).

    Long format, so fields may come and go; pandas: `df.pivot_table(index="step", columns="name")`.
    """

    FIELDS = ("step", "event", "name", "value")

    def __init__(self, filename: str = "metrics.csv") -> None:
        self.filename, self._file = filename, None

    @hookimpl
    def nima_train_start(self, run: Any) -> None:
        path = Path(run.run_dir) / self.filename
        if path.exists():  # a resumed run: rows after its checkpoint are logged again
            with open(path, newline="") as f:
                rows = [r for r in csv.DictReader(f) if int(r["step"]) <= run.start_step]
            lines = [",".join(self.FIELDS)] + [",".join(r[k] for k in self.FIELDS) for r in rows]
            write_text(path, "\n".join(lines) + "\n")
        new = not path.exists()
        self._file = open(path, "a", newline="")
        self._csv = csv.writer(self._file)
        if new:
            self._csv.writerow(self.FIELDS)

    def _rows(self, step: int, event: str, metrics: dict[str, float]) -> None:
        for name, value in metrics.items():
            self._csv.writerow([step, event, name, value])
        self._file.flush()

    @hookimpl
    def nima_train_step(self, run: Any, step: int, metrics: dict[str, float]) -> None:
        self._rows(step, "train", metrics)

    @hookimpl
    def nima_evaluate(self, run: Any, step: int, metrics: dict[str, float]) -> None:
        self._rows(step, "eval", metrics)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
