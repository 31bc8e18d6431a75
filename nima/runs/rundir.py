"""Claiming a run directory: exactly one process gets each folder, even when many start at once.

A folder is claimed by creating its `.nima-run` file with O_EXCL, which the file system grants to
one caller only; `mkdir` alone cannot tell two processes apart once the folder exists. An existing
folder may be claimed only while it holds nothing else, so a run is never mixed with another.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import socket
import time
from pathlib import Path

from nima.errors import RunDirError

CLAIM_FILE = ".nima-run"


def _timestamp() -> str:
    return time.strftime("%Y%m%d-%H%M%S")


def claim(run_dir: str | Path) -> Path:
    """Make `run_dir` this process's run directory (created if absent), or raise RunDirError."""
    run_dir = Path(run_dir)
    if (in_the_way := _take(run_dir)) is not None:
        raise RunDirError(
            f"Run directory {run_dir} already holds {in_the_way}; NIMA never shares or "
            f"overwrites a run directory. Choose a new --run-dir (an absent or empty folder), "
            f"or leave it out for runs/<experiment>-<timestamp>."
        )
    return run_dir


def claim_default(config_file: str | Path, root: str | Path = "runs") -> Path:
    """Claim runs/<experiment>-<timestamp>, or -2, -3, ... when another run took that name."""
    base = f"{Path(config_file).stem}-{_timestamp()}"
    for n in itertools.count(1):
        run_dir = Path(root) / (base if n == 1 else f"{base}-{n}")
        if _take(run_dir) is None:
            return run_dir
    raise AssertionError("unreachable")


def _take(run_dir: Path) -> str | None:
    """Claim `run_dir`: None when this process now owns it, else what is in the way."""
    try:
        run_dir.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            run_dir.mkdir()
        if not run_dir.is_dir():
            return "a file of that name"
        try:
            fd = os.open(run_dir / CLAIM_FILE, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return "another run"
        with os.fdopen(fd, "w") as f:
            owner = {"pid": os.getpid(), "host": socket.gethostname(), "time": time.time()}
            json.dump(owner, f)
        if any(p.name != CLAIM_FILE for p in run_dir.iterdir()):
            (run_dir / CLAIM_FILE).unlink()  # not ours to use: leave the folder as it was
            return "another run" if (run_dir / "config.gin").exists() else "other files"
    except OSError as exc:
        raise RunDirError(
            f"Cannot create the run directory {run_dir}: {exc.strerror or exc}. Choose a "
            f"--run-dir in a folder you can write to."
        ) from None
    return None
