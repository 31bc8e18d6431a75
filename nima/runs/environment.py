"""What a run is made on: the device, the seeds, and the versions recorded in run.json."""

from __future__ import annotations

import platform
import random
import subprocess
from typing import Any

import numpy as np
import torch

from nima.errors import ConfigError


def pick_device(name: str | None) -> torch.device:
    """--device, else CUDA when present, else the CPU; a device this machine lacks is refused."""
    if not name:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(
            f"--device {name!r} is not a device name; use cpu, cuda or cuda:N."
        ) from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ConfigError(f"--device {name}: CUDA is not available here; use --device cpu.")
        if device.index is not None and device.index >= count:
            raise ConfigError(
                f"--device {name}: this machine has {count} CUDA device(s), cuda:0 to "
                f"cuda:{count - 1}."
            )
    return device


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (every device), so a run repeats on the same machine."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


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
    import nima

    return {
        "nima": nima.__version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "git_commit": _git_commit(),
    }
