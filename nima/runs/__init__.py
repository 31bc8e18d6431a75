"""The run directory: the one format `nima run` writes and every other command reads.

```
RUN_DIR/
  .nima-run                  the claim: created exclusively (O_EXCL), so one process owns the folder
  config.gin                 the operative gin config: every parameter used, defaults included
  run.json                   seed, device, parameter counts, data checksums, versions, git commit
  tokenizer.json             the trained tokenizer
  metrics.jsonl              one JSON object per line, appended while training
  checkpoints/best.safetensors, checkpoints/last.safetensors
                             weights + metadata (step, val loss) in the safetensors header;
                             `last` also the training state to resume from
  summary.json               how the run ended: steps, losses, wall time, the sample
```

`nima.train` writes it through `claim`, `save_checkpoint` and `nima.atomic`; `nima generate`,
`nima data` and the study commands read it through `configured_settings` and `load_run`, and
none of them imports the trainer. Every file appears atomically (complete or not at all).
"""

from nima.runs.checkpoint import (
    load_checkpoint,
    read_checkpoint,
    read_training_state,
    save_checkpoint,
)
from nima.runs.environment import environment, pick_device, seed_everything
from nima.runs.load import LoadedRun, configured_settings, load_run
from nima.runs.rundir import claim, claim_default, reclaim, release

__all__ = [
    "LoadedRun",
    "claim",
    "claim_default",
    "configured_settings",
    "environment",
    "load_checkpoint",
    "load_run",
    "pick_device",
    "read_checkpoint",
    "read_training_state",
    "reclaim",
    "release",
    "save_checkpoint",
    "seed_everything",
]
