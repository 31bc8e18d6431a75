"""Per-layer training health: each layer's gradient norm, weight norm and update/weight ratio.

A global gradient norm says that something is off; these say where. The update/weight ratio
(how far one optimizer step moves a layer's weights, relative to their size) is the quickest
read on a learning rate: around 1e-3 is usual for Adam, far above means the layer is thrashing,
far below that it has stopped learning.

    stats = LayerStats(model)
    grads = stats.before_step()    # gradients final (unscaled), before clipping and the step
    optimizer.step()
    updates = stats.after_step()   # ratios of the step just taken

A layer is the parameter name up to its block index (`blocks.2.attn.qkv.weight` -> `blocks.2`),
else its first component (`token_embedding`, `norm`, `positional`). Metric names are
`grad_norm/<layer>`, `weight_norm/<layer>` and `update_ratio/<layer>`: TensorBoard groups them
by the part before the slash. Each call costs a copy of the weights (for the update), so the
trainer takes these every `train.layer_stats_interval` steps, not every step.
"""

from __future__ import annotations

import re
from collections import defaultdict

import torch

from nima.train.distributed import whole

_NUMBERED = re.compile(r"^(.*?\.\d+)\.")  # the shortest prefix ending in an index: blocks.2


def layer_of(name: str) -> str:
    """A parameter's layer: `blocks.2.attn.qkv.weight` -> `blocks.2`, `norm.weight` -> `norm`."""
    numbered = _NUMBERED.match(name)
    return numbered.group(1) if numbered else name.split(".", 1)[0]


class LayerStats:
    """Norms per layer of `model` (a tied weight counted once, under its first name)."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.layers: dict[str, list[torch.nn.Parameter]] = defaultdict(list)
        for name, p in model.named_parameters():  # each parameter once, tied ones too
            if p.requires_grad:
                self.layers[layer_of(name)].append(p)
        self._before: dict[str, list[torch.Tensor]] | None = None

    def before_step(self) -> dict[str, float]:
        """grad_norm/<layer> and weight_norm/<layer> now; keeps the weights for after_step."""
        metrics = {}
        for layer, params in self.layers.items():
            grads = [p.grad for p in params if p.grad is not None]
            if grads:
                metrics[f"grad_norm/{layer}"] = _norm(grads)
            metrics[f"weight_norm/{layer}"] = _norm(params)
        self._before = {
            layer: [p.detach().clone() for p in ps] for layer, ps in self.layers.items()
        }
        return metrics

    def after_step(self) -> dict[str, float]:
        """update_ratio/<layer>: |weights after - before| / |before| for the step since before_step
        (0 for a step the optimizer skipped)."""
        if self._before is None:
            raise RuntimeError("LayerStats.after_step needs before_step first")
        metrics = {}
        for layer, params in self.layers.items():
            before = self._before[layer]
            moved = [p.detach() - b for p, b in zip(params, before, strict=True)]
            metrics[f"update_ratio/{layer}"] = _norm(moved) / max(_norm(before), 1e-12)
        self._before = None
        return metrics


@torch.no_grad()
def _norm(tensors: list[torch.Tensor]) -> float:
    """The L2 norm of all `tensors` together (torch's, as clipping uses; DTensor shards gathered)."""
    return float(whole(torch.nn.utils.get_total_norm([t.detach() for t in tensors])))
