"""The launcher contract: how a study's `nima run` processes are started, wherever they run.

A launcher plugin is a factory `launcher(jobs=N) -> Launcher`; `N` is how many runs may go at
once. The study hands it every `Job` still to run and reads back exit codes as runs end. The
study never asks a launcher how a run is going: it reads the run directories, which every
launcher (local processes, SLURM through submitit) leaves on a file system the study can see.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class Job:
    """One run of a study: a command line and the file its output goes to.

    A job is picklable and callable, so a launcher that runs it on another machine (submitit)
    ships the job itself and calls it there.
    """

    name: str  # "rope/seed1": the variant and the seed
    argv: tuple[str, ...]
    log: Path

    def start(self) -> subprocess.Popen:
        """Start the command, stdout and stderr into `log` (a fresh file; its folder is made)."""
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "w") as log:
            return subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )

    def __call__(self) -> int:
        """Run to the end and return the exit code."""
        return self.start().wait()

    def note(self, text: str) -> None:
        """Append a line to the log: what a launcher knows about a job the job could not say."""
        with open(self.log, "a") as log:
            log.write(f"\n[launcher] {text}\n")


class Launcher(Protocol):
    """What a launcher plugin's factory returns."""

    def run(self, jobs: Sequence[Job], folder: Path) -> Iterator[tuple[Job, int | None]]:
        """Run every job, at most `jobs` at a time; yield each with its exit code as it ends
        (None when the launcher lost it, e.g. a cluster job that timed out: say why with
        `job.note`). `folder` is the launcher's own, for its files. On KeyboardInterrupt or
        when the caller stops iterating, stop the jobs still running (they save and exit)."""
        ...
