"""What a run is made on: the device, the seeds, and the versions recorded in run.json."""

from __future__ import annotations

import platform
import random
import subprocess
from typing import Any

import numpy as np
import torch

from nima.errors import ConfigError


def available_devices() -> list[str]:
    """The device names this machine can train on: cpu, each cuda:N, and mps where present."""
    cuda = [f"cuda:{i}" for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    mps = ["mps"] if torch.backends.mps.is_available() else []
    return ["cpu", *(["cuda"] if cuda else []), *cuda, *mps]


def pick_device(name: str | None) -> torch.device:
    """--device, else CUDA when present, else the CPU; a device this machine lacks is refused."""
    if not name:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    valid = available_devices()
    try:
        device = torch.device(name)
    except RuntimeError:
        device = None
    known = device is not None and (
        str(device) in valid or device.type == "cpu" or (device.index is None and device.type in valid)
    )
    if not known:
        what = "is not a device name" if device is None else "is not available on this machine"
        raise ConfigError(f"--device {name!r} {what}; this machine has: {', '.join(valid)}.")
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
