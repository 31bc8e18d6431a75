"""Checkpoints: one safetensors file each, the metadata (step, val loss, ...) in its header.

One file means one atomic rename (`nima.atomic`): weights and metadata can never come from two
different saves. Nothing is ever unpickled.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from nima.atomic import atomic_path, strict_json
from nima.errors import CheckpointError

HEADER_KEY = "nima"  # safetensors metadata is str -> str: NIMA's metadata is one JSON string


def save_checkpoint(model: torch.nn.Module, path: Path, metadata: dict[str, Any]) -> None:
    """Write the model's weights and `metadata` to `path` (a .safetensors file), atomically."""
    state = {k: v.detach().contiguous() for k, v in _unique_state(model).items()}
    header = {"format": "pt", HEADER_KEY: strict_json(metadata)}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=header)


def _unique_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The state dict with each storage once: tied weights share one, safetensors wants it once."""
    seen: set[int] = set()
    state = {}
    for name, tensor in model.state_dict().items():
        if tensor.numel() and tensor.data_ptr() in seen:
            continue
        seen.add(tensor.data_ptr())
        state[name] = tensor
    return state


def _open(path: Path, device: str = "cpu"):
    if not path.is_file():
        raise CheckpointError(
            f"Checkpoint {path} does not exist; a run writes checkpoints/best.safetensors and "
            f"checkpoints/last.safetensors at its evaluations."
        )
    try:
        return safe_open(str(path), framework="pt", device=device)
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"Checkpoint {path} is corrupt or truncated: {exc}") from None


def _metadata(path: Path, header: dict[str, str] | None) -> dict[str, Any]:
    try:
        return json.loads((header or {})[HEADER_KEY])
    except (KeyError, ValueError):
        raise CheckpointError(
            f"{path} is a safetensors file without NIMA's metadata (no readable {HEADER_KEY!r} "
            f"entry in its header); NIMA checkpoints are written by `nima run`."
        ) from None


def read_checkpoint(path: Path) -> dict[str, Any]:
    """The metadata of the checkpoint at `path`, without reading its weights."""
    with _open(path) as f:
        return _metadata(path, f.metadata())


def load_checkpoint(model: torch.nn.Module, path: Path) -> dict[str, Any]:
    """Fill `model` with the weights at `path` and return the metadata; a checkpoint that does
    not fit the model is a CheckpointError naming the tensor and the config.gin to build from."""
    config = path.parent.parent / "config.gin"  # RUN_DIR/checkpoints/NAME.safetensors
    hint = f"The model must be built from the config the checkpoint was trained with ({config})."
    own = model.state_dict()
    device = str(next(iter(own.values())).device) if own else "cpu"
    with _open(path, device) as f:
        metadata = _metadata(path, f.metadata())
        names = set(f.keys())
        missing = sorted(set(_unique_state(model)) - names)
        unexpected = sorted(names - set(own))
        if missing or unexpected:
            raise CheckpointError(
                f"Checkpoint {path} does not fit the model: the model's tensors {missing[:5]} "
                f"are not in it, and its tensors {unexpected[:5]} are not in the model. {hint}"
            )
        shapes = {n: tuple(f.get_slice(n).get_shape()) for n in names}
        wrong = [n for n in own if n in shapes and shapes[n] != tuple(own[n].shape)]
        if wrong:
            more = f" (and {len(wrong) - 1} more tensors)" if len(wrong) > 1 else ""
            raise CheckpointError(
                f"Checkpoint {path} does not fit the model: tensor {wrong[0]!r} has shape "
                f"{list(shapes[wrong[0]])} in the checkpoint but {list(own[wrong[0]].shape)} in "
                f"the model{more}. {hint}"
            )
        state = {n: f.get_tensor(n) for n in names}
    model.load_state_dict(state, strict=False)  # strict would miss the tied aliases
    return metadata
