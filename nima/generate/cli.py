"""`nima generate RUN_DIR`: continue prompts with a run's model, every sampler and strategy
option on the command line (or in a gin file's `generation` settings)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Annotated, Any

from nima.errors import ConfigError
from nima.validation import Range, cli_type

Count = cli_type(Annotated[int, Range(ge=1)])
Positive = cli_type(Annotated[float, Range(gt=0)])
Fraction = cli_type(Annotated[float, Range(gt=0, le=1)])
OpenAIPenalty = cli_type(Annotated[float, Range(ge=-2, le=2)])
Seed = cli_type(Annotated[int, Range(ge=0)])
LengthPenalty = cli_type(Annotated[float, Range(ge=-10, le=10)])


def add_decoding_arguments(parser: argparse.ArgumentParser) -> None:
    """The sampler, strategy and stopping options `generate` and `chat` share."""
    s = parser.add_argument_group("samplers (applied in this order; off unless given)")
    s.add_argument("--repetition-penalty", type=Positive, help="CTRL: >1 discourages repeats")
    s.add_argument("--frequency-penalty", type=OpenAIPenalty, help="OpenAI: -2..2, per occurrence")
    s.add_argument("--presence-penalty", type=OpenAIPenalty, help="OpenAI: -2..2, once per token")
    s.add_argument("--no-repeat-ngram", type=Count, metavar="N", help="ban repeating any N-gram")
    s.add_argument("--temperature", type=Positive)
    s.add_argument("--top-k", type=Count)
    s.add_argument("--top-p", type=Fraction)
    s.add_argument("--min-p", type=Fraction)
    s.add_argument("--typical", type=Fraction, metavar="MASS", help="locally typical sampling")
    s.add_argument("--greedy", action="store_true", help="pick the most likely token")
    b = parser.add_argument_group("strategy")
    b.add_argument("--strategy", default=None, help="sample (default) or beam, or a plugin's name")
    b.add_argument("--num-beams", type=Count)
    b.add_argument(
        "--length-penalty", type=LengthPenalty, help="beam score: sum log p / length ** this"
    )
    b.add_argument("--early-stopping", action="store_true", help="beam: stop at num_beams ends")
    b.add_argument("--num-return", type=Count, help="beam: hypotheses per prompt (n-best)")
    b.add_argument("--draft", type=Path, metavar="RUN_DIR", help="speculative: the draft run")
    b.add_argument("--lookahead", type=Count, help="speculative: draft tokens per check (4)")
    g = parser.add_argument_group("stopping and randomness")
    g.add_argument("--max-new-tokens", type=Count)
    g.add_argument("--stop", action="append", default=None, metavar="TEXT",
                   help="end a reply before this text (repeatable)")  # fmt: skip
    g.add_argument("--ignore-eos", action="store_true", help="go on past the eos token")
    g.add_argument("--seed", type=Seed, help="prompt i samples with seed + i (default 0)")
    g.add_argument("--context-overflow", choices=("slide", "stop"),
                   help="at context_length: slide the window (default) or stop")  # fmt: skip
    parser.add_argument("--checkpoint", choices=("best", "last"), default="best")
    parser.add_argument("--device", help="cpu, cuda, cuda:1 (default: cuda when present)")
    parser.add_argument("--config", action="append", default=[], type=Path, metavar="FILE.gin",
                        help="gin file setting generation.samplers / .strategy / ...")  # fmt: skip
    parser.add_argument("--bind", action="append", default=[], metavar="'generation.x = v'")


def decoding_from_args(args: argparse.Namespace, run_dir: Path, system: Any):
    """(samplers, strategy, options, decoding) from gin's `generation` settings, then the
    command line (a sampler or strategy option given replaces gin's list or strategy)."""
    from nima.generate.options import STRATEGY_OPTIONS, Decoding, GenerationSettings

    settings = GenerationSettings()
    if args.config or args.bind:
        import gin

        from nima import config

        config.parse([run_dir / "config.gin", *args.config], args.bind, system)
        with config.building():
            settings = gin.get_configurable(GenerationSettings)()
    decoding = Decoding()
    sampler_given = strategy_given = False
    for name in Decoding.names():
        value = getattr(args, name, None)
        if value is None or value is False:
            continue
        if name == "strategy" and value not in system.registries["strategy"]:
            system.registries["strategy"].get(value)  # the unknown-plugin error, with names
        setattr(decoding, name, value)
        if name in ("strategy", *STRATEGY_OPTIONS, "lookahead"):
            strategy_given = True
        else:
            sampler_given = True
    beam = [n for n in STRATEGY_OPTIONS if getattr(args, n) not in (None, False)]
    if beam and decoding.strategy != "beam":
        given = ", ".join("--" + n.replace("_", "-") for n in beam)
        raise ConfigError(f"{given}: beam options (--num-beams, --length-penalty, "
                          f"--early-stopping, --num-return); add --strategy beam")  # fmt: skip
    if args.lookahead is not None and decoding.strategy != "speculative":
        raise ConfigError("--lookahead is a speculative option; add --strategy speculative "
                          "--draft RUN_DIR")  # fmt: skip
    if (args.draft is not None) != (decoding.strategy == "speculative"):
        raise ConfigError("--strategy speculative and --draft RUN_DIR go together")
    if args.draft is not None:
        from nima.generate.from_run import load

        decoding.draft = load(args.draft, args.checkpoint, args.device, system).model
    registries = system.registries
    samplers = decoding.chain(registries["sampler"])
    if not sampler_given and settings.samplers is not None:
        samplers = list(settings.samplers)
    strategy = decoding.build_strategy(registries["strategy"])
    if not strategy_given and settings.strategy is not None:
        strategy = settings.strategy
    options = {
        "max_new_tokens": args.max_new_tokens or settings.max_new_tokens or 200,
        "stop": args.stop if args.stop is not None else settings.stop,
        "seed": args.seed if args.seed is not None else (settings.seed or 0),
        "overflow": args.context_overflow or settings.overflow or "slide",
        "ignore_eos": args.ignore_eos,
    }
    return samplers, strategy, options, decoding


def read_prompts(path: Path) -> list[str]:
    """Prompts from a file: JSON Lines ({"prompt": ...} per line) for .jsonl, else one per line."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"--prompts {path}: cannot read it ({exc}); give a text or .jsonl file"
        ) from None
    if path.suffix != ".jsonl":
        prompts = [line for line in lines if line.strip()]
    else:
        prompts = []
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"--prompts {path}:{n}: not JSON ({exc.msg})") from None
            if not isinstance(record, dict) or not isinstance(record.get("prompt"), str):
                raise ConfigError(
                    f'--prompts {path}:{n}: each line must be an object with a "prompt" string, '
                    f'e.g. {{"prompt": "KING"}}'
                )
            prompts.append(record["prompt"])
    if not prompts:
        raise ConfigError(f"--prompts {path} holds no prompt")
    return prompts


def record(prompt: str, completion: Any) -> dict[str, Any]:
    """One output line: the prompt, its continuation, ids, why it ended (and beam's n-best)."""
    out = {"prompt": prompt, "text": completion.text, "ids": completion.ids,
           "finish_reason": completion.finish_reason}  # fmt: skip
    if completion.score is not None:
        out["score"] = completion.score
        out["n_best"] = [{"text": c.text, "ids": c.ids, "finish_reason": c.finish_reason,
                          "score": c.score} for c in completion.n_best]  # fmt: skip
    return out


def cmd_generate(args: argparse.Namespace) -> int:
    from nima import atomic
    from nima.generate.from_run import load
    from nima.hooks import for_command

    system = for_command(args.disable_plugins)
    if args.prompt is not None and args.prompts is not None:
        raise ConfigError("give --prompt or --prompts, not both")
    if args.prompts is not None:
        prompts = read_prompts(args.prompts)
    else:
        prompts = [args.prompt if args.prompt is not None else "\n"]
    lm = load(args.run_dir, args.checkpoint, args.device, system)
    samplers, strategy, options, _ = decoding_from_args(args, args.run_dir, system)
    n, seed = options.pop("max_new_tokens"), options.pop("seed")
    records = []  # prompt i samples with seed + i, whatever the batch size or --stream
    if args.stream:
        for i, prompt in enumerate(prompts):
            print(prompt, end="", flush=True)
            pieces = lm.stream(prompt, n, samplers, strategy, seed=seed + i, **options)
            while True:
                try:
                    piece = next(pieces)
                except StopIteration as end:  # the stream returns the completion
                    records.append(record(prompt, end.value))
                    break
                print(piece, end="", flush=True)
            print(flush=True)
    else:
        for start in range(0, len(prompts), args.batch_size):
            batch = prompts[start : start + args.batch_size]
            out = lm.generate(batch, n, samplers, strategy, seed=seed + start, **options)
            for prompt, c in zip(batch, out, strict=True):
                records.append(record(prompt, c))
                if args.out is None:
                    print(prompt + c.text)
    if args.out is not None:
        atomic.write_text(
            args.out, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
        )
        print(f"wrote {len(records)} completions to {args.out}", file=sys.stderr)
    return 0


def add_generate_arguments(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    gen = sub.add_parser("generate", parents=parents, help="continue prompts with a run's model")
    gen.add_argument("run_dir", type=Path)
    gen.add_argument("--prompt", help="the text to continue (default: a newline)")
    gen.add_argument("--prompts", type=Path, metavar="FILE", help="one prompt per line, or .jsonl")
    gen.add_argument("--out", type=Path, metavar="FILE.jsonl", help="write results as JSON lines")
    gen.add_argument("--stream", action="store_true", help="print tokens as they come")
    gen.add_argument("--batch-size", type=Count, default=8, help="prompts decoded together")
    add_decoding_arguments(gen)
    gen.set_defaults(func=cmd_generate)
