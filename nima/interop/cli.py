"""`nima export RUN_DIR --format hf OUT_DIR` and `nima import HF_DIR --run-dir RUN_DIR`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def add_interop_arguments(subparsers: Any, parents: list[argparse.ArgumentParser] = ()) -> None:
    """Add `export` and `import` to the `nima` subparsers."""
    export = subparsers.add_parser(
        "export", parents=list(parents), help="write a run as a Hugging Face GPT-2 directory"
    )
    export.add_argument("run_dir", type=Path)
    export.add_argument("out_dir", type=Path, help="a new folder")
    export.add_argument("--format", choices=("hf",), required=True,
                        help="hf: config.json + model.safetensors (+ tokenizer.json)")  # fmt: skip
    export.add_argument("--checkpoint", choices=("best", "last"), default="best")
    export.set_defaults(func=main_export)

    imp = subparsers.add_parser(
        "import", parents=list(parents), help="make a Hugging Face GPT-2 directory a NIMA run"
    )
    imp.add_argument("hf_dir", type=Path, help="config.json, model.safetensors, tokenizer.json")
    imp.add_argument("--run-dir", type=Path, required=True, help="the run directory to write")
    imp.set_defaults(func=main_import)


def main_export(args: argparse.Namespace) -> int:
    from nima.hooks import for_command
    from nima.interop.hf import export_hf

    files = export_hf(
        args.run_dir, args.out_dir, for_command(args.disable_plugins), args.checkpoint
    )
    print(f"wrote {args.out_dir}: {', '.join(files)}")
    print(f"load it with transformers.GPT2LMHeadModel.from_pretrained({str(args.out_dir)!r})")
    return 0


def main_import(args: argparse.Namespace) -> int:
    from nima.hooks import for_command
    from nima.interop.hf import import_hf

    run_dir = import_hf(args.hf_dir, args.run_dir, for_command(args.disable_plugins))
    print(f"wrote {run_dir}")
    print(f"sample it:    nima generate {run_dir} --prompt '...'")
    print(f"fine-tune it: nima run {run_dir}/config.gin experiments/finetune.gin")
    return 0
