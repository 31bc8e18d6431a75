"""Checkpoints: weights as safetensors plus a JSON of metadata; nothing is ever unpickled."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from nima.errors import CheckpointError


def save(model: torch.nn.Module, path: Path, metadata: dict[str, Any]) -> None:
    """Write `path`.safetensors and `path`.json atomically (temp file, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # tied weights share storage; safetensors wants each tensor once
    state = {k: v.detach().contiguous() for k, v in _unique_state(model).items()}
    weights, meta = path.with_suffix(".safetensors"), path.with_suffix(".json")
    tmp_w, tmp_m = weights.with_suffix(".safetensors.tmp"), meta.with_suffix(".json.tmp")
    save_file(state, str(tmp_w))
    tmp_m.write_text(json.dumps(metadata, indent=2))
    os.replace(tmp_w, weights)
    os.replace(tmp_m, meta)


def _unique_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    seen: dict[int, str] = {}
    state = {}
    for name, tensor in model.state_dict().items():
        key = tensor.data_ptr()
        if key in seen and tensor.numel():
            continue
        seen[key] = name
        state[name] = tensor
    return state


def load(model: torch.nn.Module, path: Path) -> dict[str, Any]:
    """Load weights into `model` and return the metadata; a bad file is a CheckpointError."""
    weights, meta = path.with_suffix(".safetensors"), path.with_suffix(".json")
    for f in (weights, meta):
        if not f.is_file():
            raise CheckpointError(
                f"Checkpoint file {f} is missing; a checkpoint is a .safetensors + .json pair."
            )
    try:
        metadata = json.loads(meta.read_text())
        state = load_file(str(weights))
    except (json.JSONDecodeError, SafetensorError, OSError) as exc:
        raise CheckpointError(f"Checkpoint {weights} is corrupt or truncated: {exc}") from None
    missing, unexpected = model.load_state_dict(state, strict=False)
    own = model.state_dict()
    loaded = {own[name].data_ptr() for name in state if name in own}
    missing = [m for m in missing if own[m].data_ptr() not in loaded]  # tied to a loaded tensor
    if missing or unexpected:
        raise CheckpointError(
            f"Checkpoint {weights} does not fit this model: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}. Was it written by a run with another config?"
        )
    return metadata
