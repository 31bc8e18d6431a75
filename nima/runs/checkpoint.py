"""Checkpoints: one safetensors file each, the metadata (step, val loss, ...) in its header.

One file means one atomic rename (`nima.atomic`): weights and metadata can never come from two
different saves. Nothing is ever unpickled.

A checkpoint to resume from (`last`) also holds the training state (optimizer, scheduler, RNG
streams, counters): its tensors are stored beside the weights under names starting with
`~train/` (no module name can), and the rest of its structure is JSON in the header under
`nima_train`, each tensor replaced by `{"~tensor": name}`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from nima.atomic import atomic_path, strict_json
from nima.errors import CheckpointError

HEADER_KEY = "nima"  # safetensors metadata is str -> str: NIMA's metadata is one JSON string
STATE_KEY = "nima_train"  # the training state's structure, JSON
STATE_PREFIX = "~train/"  # the training state's tensors


def save_checkpoint(
    model: torch.nn.Module,
    path: Path,
    metadata: dict[str, Any],
    training_state: dict[str, Any] | None = None,
    weights: dict[str, torch.Tensor] | None = None,
) -> None:
    """Write the model's weights and `metadata` (and the training state, to resume from) to
    `path` (a .safetensors file), atomically. `weights`: the full weights gathered from a
    sharded (FSDP) model, each storage once, in place of the model's own."""
    weights = _unique_state(model) if weights is None else weights
    tensors = {k: v.detach().contiguous() for k, v in weights.items()}
    header = {"format": "pt", HEADER_KEY: strict_json(metadata)}
    if training_state is not None:
        header[STATE_KEY] = json.dumps(_flatten(training_state, tensors, ""), allow_nan=False)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=header)


def read_training_state(path: Path) -> dict[str, Any]:
    """The training state saved in the checkpoint at `path` (tensors on the CPU)."""
    with _open(path) as f:
        header = f.metadata() or {}
        if STATE_KEY not in header:
            raise CheckpointError(
                f"Checkpoint {path} holds weights but no training state, so a run cannot resume "
                f"from it; `last` checkpoints written by this version of NIMA hold it."
            )
        tensors = {n: f.get_tensor(n) for n in f.keys() if n.startswith(STATE_PREFIX)}
        return _unflatten(json.loads(header[STATE_KEY]), tensors)


def _flatten(value: Any, tensors: dict[str, torch.Tensor], path: str) -> Any:
    """`value` as JSON, its tensors and arrays moved into `tensors` (keys are stringified only
    where all are strings; tuples and non-finite floats are marked, so they come back)."""
    if isinstance(value, torch.Tensor):
        tensors[STATE_PREFIX + path] = value.detach().cpu().contiguous().clone()
        return {"~tensor": STATE_PREFIX + path}
    if isinstance(value, np.ndarray):  # numpy's RNG key is uint32, which torch stores as int64
        tensors[STATE_PREFIX + path] = torch.from_numpy(value.astype(np.int64))
        return {"~ndarray": STATE_PREFIX + path, "dtype": str(value.dtype)}
    if isinstance(value, dict):
        items = [[k, _flatten(v, tensors, f"{path}/{k}")] for k, v in value.items()]
        if all(isinstance(k, str) and not k.startswith("~") for k in value):
            return dict(items)
        return {"~items": items}
    if isinstance(value, (list, tuple)):
        items = [_flatten(v, tensors, f"{path}/{i}") for i, v in enumerate(value)]
        return {"~tuple": items} if isinstance(value, tuple) else items
    if isinstance(value, float) and not math.isfinite(value):
        return {"~float": repr(value)}
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    raise TypeError(f"training state at {path!r}: {type(value).__name__} is not storable")


def _unflatten(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(value, list):
        return [_unflatten(v, tensors) for v in value]
    if not isinstance(value, dict):
        return value
    if "~tensor" in value:
        return tensors[value["~tensor"]]
    if "~ndarray" in value:
        return tensors[value["~ndarray"]].numpy().astype(value["dtype"])
    if "~items" in value:
        return {k: _unflatten(v, tensors) for k, v in value["~items"]}
    if "~tuple" in value:
        return tuple(_unflatten(v, tensors) for v in value["~tuple"])
    if "~float" in value:
        return float(value["~float"])
    return {k: _unflatten(v, tensors) for k, v in value.items()}


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


def load_checkpoint(
    model: torch.nn.Module,
    path: Path,
    load: Callable[[dict[str, torch.Tensor]], None] | None = None,
) -> dict[str, Any]:
    """Fill `model` with the weights at `path` and return the metadata; a checkpoint that does
    not fit the model is a CheckpointError naming the tensor and the config.gin to build from.
    `load`: what puts the checked weights into the model (a sharded model's own way)."""
    config = path.parent.parent / "config.gin"  # RUN_DIR/checkpoints/NAME.safetensors
    hint = f"The model must be built from the config the checkpoint was trained with ({config})."
    own = model.state_dict()
    device = str(next(iter(own.values())).device) if own else "cpu"
    with _open(path, device) as f:
        metadata = _metadata(path, f.metadata())
        names = {n for n in f.keys() if not n.startswith(STATE_PREFIX)}
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
    if load is not None:
        load(state)
    else:
        model.load_state_dict(state, strict=False)  # strict would miss the tied aliases
    return metadata
