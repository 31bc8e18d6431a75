"""Conformance checks for dataset and logger plugins.

dataset: built with its defaults; `splits()` gives non-empty text for train and val, and
`checksum()` is a stable string (the same twice, and from a second instance). A dataset that
cannot be built here (it needs a path, or data this machine lacks: a DataError) is skipped with
its message, not failed.
logger: built with its defaults, it gets every trainer event through NIMA's own dispatch
(nima.train.trainer.emit) without raising; and when its own hook raises (on metrics that raise
when read), the run's events go on, it is dropped with a warning naming it, and its close()
still works.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
from collections.abc import Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from nima.errors import DataError
from nima.testing.kit import Check, Skip, maker

EVENTS = ("nima_train_start", "nima_train_step", "nima_evaluate", "nima_train_end")


def _dataset(factory: Any) -> Any:
    dataset = factory()  # nima.testing.kit.maker: Skip when it cannot be built here
    try:
        splits = dataset.splits()
    except DataError as exc:  # the data is not on this machine
        raise Skip(" ".join(str(exc).split())) from None
    return dataset, splits


def check_splits(factory: Any) -> dict[str, int]:
    dataset, splits = _dataset(factory)
    assert isinstance(splits, dict), f"splits() returned {type(splits).__name__}, not a dict"
    for name in ("train", "val"):
        text = splits.get(name)
        assert isinstance(text, str) and text, f"split {name!r} is missing or empty"
    for name, text in splits.items():
        assert isinstance(text, str) and text, f"split {name!r} is empty or not text"
    return {name: len(text) for name, text in splits.items()}


def check_checksum(factory: Any) -> None:
    dataset, _ = _dataset(factory)
    first, again, other = dataset.checksum(), dataset.checksum(), factory().checksum()
    assert isinstance(first, str) and first, f"checksum() returned {first!r}"
    assert first == again == other, (
        f"checksum() is not stable: {first!r}, then {again!r}, a second instance {other!r}"
    )


def fake_run(run_dir: Path) -> SimpleNamespace:
    """What a logger's hooks see of a run (nima.train.trainer.Run), for a 2-step run."""
    import torch

    class ToyModel(torch.nn.Linear):  # what the contract's Model offers a logger
        def num_parameters(self, non_embedding: bool = True) -> int:
            return sum(p.numel() for p in self.parameters())

    return SimpleNamespace(
        run_dir=run_dir, start_step=0, total_steps=2, device=torch.device("cpu"),
        model=ToyModel(2, 2), settings=SimpleNamespace(), summary={},
    )  # fmt: skip


class Poisoned(Mapping):
    """Metrics whose every read raises: the error then happens in the logger's own code."""

    def _raise(self, *args: Any) -> Any:
        raise RuntimeError("injected by nima.testing: these metrics cannot be read")

    __getitem__ = __iter__ = __len__ = __contains__ = _raise


def _send_events(logger: Any, run: Any, odd: Mapping[str, float] | None = None) -> tuple[bool, str]:
    """Every trainer event, through NIMA's dispatch: (whether the logger is still registered,
    that is never dropped for raising; what was printed to stderr). `metrics` replaces those of
    the first train step and of the evaluation, given `odd`."""
    from nima.hooks import PluginSystem
    from nima.train.trainer import emit

    system = PluginSystem()
    system.pm.register(logger)
    metrics = {  # what the trainer sends (Trainer.advance)
        "train_loss": 2.5, "lr": 1e-3, "grad_norm": 0.7, "tokens_per_s": 1e4,
        "flops_per_s": 1e9, "tokens": 256, "loss_spikes": 0,
    }  # fmt: skip
    evaluation = {"val_loss": 2.4, "val_perplexity": 11.0}
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        emit(system, "nima_train_start", run=run)
        emit(system, "nima_train_step", run=run, step=1, metrics=metrics if odd is None else odd)
        emit(system, "nima_evaluate", run=run, step=2, metrics=evaluation if odd is None else odd)
        emit(system, "nima_train_step", run=run, step=2, metrics=metrics)
        emit(system, "nima_train_end", run=run, summary={"steps": 2})
    return system.pm.is_registered(logger), stderr.getvalue()


def check_events(factory: Any) -> None:
    quiet = contextlib.redirect_stderr(io.StringIO())  # a progress display draws on stderr
    with quiet, tempfile.TemporaryDirectory(prefix="nima-check-") as folder:
        logger = factory()
        kept, printed = _send_events(logger, fake_run(Path(folder)))
        raised = [line for line in printed.splitlines() if "warning:" in line]
        assert kept, f"it raised on a trainer event: {' '.join(raised)}"
        logger.close()


def check_own_error(factory: Any) -> None:
    """Metrics that raise when read make the logger's own hook fail, in its own state: NIMA's
    dispatch must drop it with a warning, the run's events go on, and its close() still works."""
    quiet = contextlib.redirect_stderr(io.StringIO())
    with quiet, tempfile.TemporaryDirectory(prefix="nima-check-") as folder:
        logger = factory()
        kept, printed = _send_events(logger, fake_run(Path(folder)), odd=Poisoned())
        if kept and "injected by nima.testing" not in printed:
            raise Skip("its hooks never read their metrics, so no error of its own was provoked")
        assert not kept, "a logger whose hook raised was not dropped"
        assert "injected by nima.testing" in printed, "its error was not reported"
        logger.close()


def dataset_checks(entry, device: str) -> list:
    return [
        Check("dataset", entry.name, "splits", "train and val splits of non-empty text", True,
              lambda: check_splits(maker(entry))),
        Check("dataset", entry.name, "checksum", "a stable checksum", True,
              lambda: check_checksum(maker(entry))),
    ]  # fmt: skip


def logger_checks(entry, device: str) -> list:
    return [
        Check("logger", entry.name, "events", "every trainer event, without raising", True,
              lambda: check_events(maker(entry))),
        Check("logger", entry.name, "own_error",
              "after its own hook raises: dropped with a warning, the run goes on, close() works",
              True, lambda: check_own_error(maker(entry))),
    ]  # fmt: skip
