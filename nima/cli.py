"""The `nima` command: run | plugins | generate | chat | plot | bench | data."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Annotated

import nima
from nima.attention_maps import add_attention_arguments
from nima.bench import add_bench_arguments, main_bench
from nima.check import add_check_arguments
from nima.compare import add_compare_arguments
from nima.data.cli import add_data_arguments
from nima.errors import ConfigError, NimaError
from nima.fill import add_fill_arguments
from nima.generate.chat import add_chat_arguments
from nima.generate.cli import add_generate_arguments
from nima.hooks import for_command
from nima.interop.cli import add_interop_arguments
from nima.study.cli import add_study_arguments
from nima.validation import Range, cli_type

Count = cli_type(Annotated[int, Range(ge=1)])


class Parser(argparse.ArgumentParser):
    """argparse, with its errors in NIMA's form: one `error:` paragraph, exit code 2."""

    def error(self, message: str):
        self.exit(2, f"error: {self.prog}: {message}. See `{self.prog} --help`.\n")


def cmd_run(args: argparse.Namespace) -> int:
    from nima.train.run import interrupted_message, run_experiment

    if not args.config and not args.resume:
        raise ConfigError("nima run needs a gin file (e.g. experiments/gpt.gin) or --resume RUN_DIR.")
    if args.nproc > 1 and "WORLD_SIZE" not in os.environ:  # start the ranks through torchrun
        from nima.train.distributed import launch

        argv = [*map(str, args.config), *(a for b in args.bind for a in ("--bind", b))]
        for flag, value in [("--run-dir", args.run_dir), ("--device", args.device),
                            ("--resume", args.resume), ("--disable-plugins", args.disable_plugins)]:  # fmt: skip
            argv += [flag, str(value)] if value else []
        argv += ["--no-progress"] * args.no_progress + ["--debug"] * args.debug
        return launch(args.nproc, ["run", *argv])
    summary = run_experiment(
        args.config,
        args.bind,
        for_command(args.disable_plugins),
        run_dir=args.run_dir,
        device_name=args.device,
        show_progress=not args.no_progress,
        resume=args.resume,
    )
    if summary.get("rank"):  # ranks other than 0 of a distributed run: rank 0 reports
        return 130 if summary["interrupted"] else 0
    if summary["interrupted"]:
        print(interrupted_message(summary), file=sys.stderr)
        return 130
    print("\n--- sample ---")
    print(summary["sample"])
    print("---")
    scope = "whole split" if summary["final_eval"] == "full" else "eval batches"
    for split, prefix, what in (("val", "final_val", "best val"), ("test", "test", "test")):
        if f"{prefix}_loss" not in summary:  # a test split only where the dataset has one
            continue
        bits = summary.get(f"{split}_bits_per_char")
        shown = (f"{prefix}_loss", f"{prefix}_perplexity")
        more = [(k.removeprefix(f"{prefix}_"), v) for k, v in summary.items()
                if k.startswith(f"{prefix}_") and k not in shown]  # the objective's metrics  # fmt: skip
        print(
            f"{what} loss: {summary[f'{prefix}_loss']:.4f} ({scope}, checkpoint of step "
            f"{summary['best_step']}), perplexity {summary[f'{prefix}_perplexity']:.2f}"
            + (f", {bits:.4f} bits per character" if bits is not None else "")
            + "".join(f", {name} {value:.4f}" for name, value in more)
        )
    print(
        f"steps {summary['steps']}, wall {summary['wall_s']:.1f}s, "
        f"{summary['tokens_per_s']:,.0f} tokens/s, run dir {summary['run_dir']}"
    )
    return 0


def cmd_plugins(args: argparse.Namespace) -> int:
    system = for_command(args.disable_plugins)
    entries = system.registries.entries(args.family)
    if args.json:
        print(json.dumps([e.as_dict() for e in entries], indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table("family", "name", "package", "description")
    for e in entries:
        table.add_row(e.family, e.name, e.package, e.description)
    Console().print(table)
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from nima.plot import plot_runs

    out = args.out or args.run_dirs[0] / "loss.png"
    print(plot_runs(args.run_dirs, out))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="nima", description=__doc__)
    parser.add_argument("--version", action="version", version=f"nima {nima.__version__}")
    common = Parser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show tracebacks")
    common.add_argument(
        "--disable-plugins",
        metavar="PKG,PKG",
        help="plugin packages not to load (also NIMA_DISABLE_PLUGINS)",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", parents=[common], help="train as a gin file says")
    run.add_argument("config", nargs="*", help="gin file(s), e.g. experiments/gpt.gin")
    run.add_argument(
        "--bind",
        action="append",
        default=[],
        metavar="'A.b = v'",
        help="override a gin binding (repeatable)",
    )
    run.add_argument("--run-dir", type=Path, help="default: runs/<experiment>-<timestamp>")
    run.add_argument("--device", help="cpu, cuda, cuda:1 (default: cuda when present)")
    run.add_argument("--no-progress", action="store_true", help="no live progress display")
    run.add_argument(
        "--resume", type=Path, metavar="RUN_DIR", help="go on with a stopped or finished run"
    )
    run.add_argument(
        "--nproc", type=Count, default=1, help="training processes on this machine (torchrun)"
    )
    run.set_defaults(func=cmd_run)

    plugins = sub.add_parser("plugins", parents=[common], help="list registered plugins")
    plugins.add_argument("--json", action="store_true", help="a JSON list of entries")
    plugins.add_argument("--family", help="only this family")
    plugins.set_defaults(func=cmd_plugins)

    add_generate_arguments(sub, parents=[common])
    add_chat_arguments(sub, parents=[common])

    bench = sub.add_parser("bench", help="benchmarks: attention kernels side by side")
    bench_sub = bench.add_subparsers(dest="bench_command", required=True)
    attention = bench_sub.add_parser(
        "attention", parents=[common], help="attention plugins vs SDPA"
    )
    add_bench_arguments(attention)
    attention.set_defaults(func=main_bench)

    plot = sub.add_parser("plot", parents=[common], help="loss curves of one or more runs")
    plot.add_argument("run_dirs", nargs="+", type=Path)
    plot.add_argument("--out", type=Path, help="PNG to write (default: RUN_DIR/loss.png)")
    plot.set_defaults(func=cmd_plot)

    add_data_arguments(sub, parents=[common])
    add_study_arguments(sub, parents=[common])
    add_compare_arguments(sub, parents=[common])
    add_fill_arguments(sub, parents=[common])
    add_interop_arguments(sub, parents=[common])
    add_check_arguments(sub, parents=[common])
    add_attention_arguments(sub, parents=[common])
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except NimaError as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `nima plugins --json | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no error at exit
        return 141  # 128 + SIGPIPE, as a shell reports a process its pipe closed


if __name__ == "__main__":
    sys.exit(main())
