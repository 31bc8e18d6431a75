"""Claiming a run directory: exactly one process gets each folder, even when many start at once.

A folder is claimed by creating its `.nima-run` file with O_EXCL, which the file system grants to
one caller only; `mkdir` alone cannot tell two processes apart once the folder exists. An existing
folder may be claimed only while it holds nothing else, so a run is never mixed with another.

The claiming process also holds an advisory lock (flock) on `.nima-run` until it `release`s it,
so `nima run --resume` can tell a run that is still going (locked) from one that stopped (the
lock dies with its process, however it ended: Ctrl-C, SIGKILL, a crash).
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import json
import os
import socket
import time
from pathlib import Path

from nima.errors import RunDirError

CLAIM_FILE = ".nima-run"
_held: dict[Path, int] = {}  # run directories whose claim this process holds locked


def _lock(run_dir: Path) -> bool:
    """Lock `run_dir`'s claim file for this process's lifetime; False if another holds it."""
    fd = os.open(run_dir / CLAIM_FILE, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return False
    _held[run_dir.resolve()] = fd
    return True


def release(run_dir: str | Path) -> None:
    """Unlock a run directory this process claimed: its run is over."""
    fd = _held.pop(Path(run_dir).resolve(), None)
    if fd is not None:
        os.close(fd)  # closing the file drops its flock


def reclaim(run_dir: str | Path) -> Path:
    """Take over a stopped run's directory to go on with it (`nima run --resume`)."""
    run_dir = Path(run_dir)
    if not (run_dir / CLAIM_FILE).is_file() or not (run_dir / "config.gin").is_file():
        raise RunDirError(
            f"{run_dir} is not a run directory (no {CLAIM_FILE} and config.gin); --resume takes "
            f"the folder a `nima run` wrote."
        )
    if not _lock(run_dir):
        raise RunDirError(
            f"Run {run_dir} is still going in another process (its {CLAIM_FILE} is locked); "
            f"stop that process first (Ctrl-C saves its last step), then resume."
        )
    return run_dir


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
        _lock(run_dir)  # ours, and no other process has its path yet
    except OSError as exc:
        raise RunDirError(
            f"Cannot create the run directory {run_dir}: {exc.strerror or exc}. Choose a "
            f"--run-dir in a folder you can write to."
        ) from None
    return None
