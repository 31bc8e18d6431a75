"""`nima ablate STUDY.gin` and `nima study report STUDY_DIR`.

`nima/cli.py` adds both through `add_study_arguments(subparsers, parents=[common])`; each
command's `func` returns the exit code.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Annotated, Any

from nima.validation import Range, cli_type


def add_study_arguments(subparsers: Any, parents: list[argparse.ArgumentParser] = ()) -> None:
    """Add `ablate` and `study report` to the `nima` subparsers."""
    ablate = subparsers.add_parser(
        "ablate", parents=list(parents), help="run a study: every variant x seed, then statistics"
    )
    ablate.add_argument(
        "study", type=Path, help="study file, e.g. experiments/ablations/positional.gin"
    )
    ablate.add_argument("--bind", action="append", default=[], metavar="'A.b = v'",
                        help="override a binding of the study or its experiment (repeatable)")  # fmt: skip
    ablate.add_argument("--jobs", type=cli_type(Annotated[int, Range(ge=1)]),
                        help="runs at a time (default: study.jobs)")  # fmt: skip
    ablate.add_argument("--study-dir", type=Path, help="default: runs/study-<study file name>")
    ablate.add_argument("--dry-run", action="store_true", help="show the variants and runs only")
    ablate.add_argument("--no-progress", action="store_true", help="no live progress display")
    ablate.set_defaults(func=main_ablate)

    # the common options go on the leaf commands only: a group's defaults would override them
    study = subparsers.add_parser("study", help="studies: report")
    sub = study.add_subparsers(dest="study_command", required=True)
    report = sub.add_parser(
        "report", parents=list(parents), help="write a study's tables and plots from its runs"
    )
    report.add_argument("study_dir", type=Path)
    report.set_defaults(func=main_report)


def main_ablate(args: argparse.Namespace) -> int:
    from nima.hooks import for_command
    from nima.study.ablate import ablate, default_study_dir
    from nima.study.spec import load_study

    system = for_command(args.disable_plugins)
    study = load_study(args.study, args.bind, system)
    return ablate(
        study,
        args.study_dir or default_study_dir(args.study),
        system,
        jobs=args.jobs,
        dry_run=args.dry_run,
        show_progress=not args.no_progress,
        disable_plugins=args.disable_plugins,
    )


def main_report(args: argparse.Namespace) -> int:
    from nima.study.report import write_report

    results = write_report(args.study_dir)
    print((results.study_dir / "results.md").read_text())
    print(f"wrote results.csv, results.md, curves.png, metric.png in {results.study_dir}")
    return 0
