"""Run directories: refused when they already hold a run; enough inside to reproduce the run."""

from __future__ import annotations

import json
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

from nima.errors import RunDirError


def default_run_dir(config_file: str | Path) -> Path:
    """runs/<experiment>-<timestamp>, the experiment being the gin file's stem."""
    return Path("runs") / f"{Path(config_file).stem}-{time.strftime('%Y%m%d-%H%M%S')}"


def claim(run_dir: Path) -> Path:
    """Create `run_dir`, or refuse if it already holds anything (never overwrite a run)."""
    if run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
        what = "another run" if (run_dir / "config.gin").exists() else "other files"
        raise RunDirError(
            f"Run directory {run_dir} already holds {what}; NIMA never overwrites a run. "
            f"Choose a new --run-dir, or leave it out for runs/<experiment>-<timestamp>."
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def environment() -> dict[str, Any]:
    """Versions and commit a run was made with (written to run.json)."""
    import torch

    import nima

    return {
        "nima": nima.__version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "git_commit": _git_commit(),
    }


def write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    tmp.replace(path)
