"""`nima data prepare CONFIG.gin` builds an experiment's token cache; `nima data info` lists caches.

`nima/cli.py` adds the `data` command through `add_data_arguments(subparsers, parents=[common])`;
its `func` is `main_data(args) -> exit code`.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from nima.data.tokens import cache_entries, prepare_tokens, tokens_root


def add_data_arguments(subparsers: Any, parents: list[argparse.ArgumentParser] = ()) -> None:
    """Add `data prepare` and `data info` to the `nima` subparsers."""
    # the common options go on the leaf commands only: a group's defaults would override them
    data = subparsers.add_parser("data", help="token caches: prepare, info")
    sub = data.add_subparsers(dest="data_command", required=True)
    prepare = sub.add_parser(
        "prepare", parents=list(parents), help="build an experiment's token cache"
    )
    prepare.add_argument("config", nargs="+", help="gin file(s), e.g. experiments/gpt_bpe.gin")
    prepare.add_argument("--bind", action="append", default=[], metavar="'A.b = v'")
    info = sub.add_parser("info", parents=list(parents), help="list the token caches")
    info.add_argument("--json", action="store_true", help="a JSON list of cache entries")
    data.set_defaults(func=main_data)


def main_data(args: argparse.Namespace) -> int:
    if args.data_command == "prepare":
        return _prepare(args)
    return _info(args)


def _prepare(args: argparse.Namespace) -> int:
    from nima import config
    from nima.hooks import for_command
    from nima.runs import configured_settings

    system = for_command(getattr(args, "disable_plugins", None))
    config.parse(args.config, args.bind, system)
    settings = configured_settings(needs=("dataset", "tokenizer"))
    start = time.perf_counter()
    prepared = prepare_tokens(settings.dataset, settings.tokenizer)
    meta = prepared.metadata
    print(f"{meta['dataset']} + {meta['tokenizer']['kind']} tokenizer (vocab {meta['tokenizer']['vocab_size']}): "
          f"{prepared.cache_path} ({time.perf_counter() - start:.1f}s)")  # fmt: skip
    for name, split in meta["splits"].items():
        print(f"  {name:5s} {split['tokens']:>10,} tokens  {split['chars']:>10,} chars  "
              f"{split['chars'] / max(split['tokens'], 1):.2f} chars/token")  # fmt: skip
    return 0


def _info(args: argparse.Namespace) -> int:
    entries = cache_entries()
    if args.json:
        print(json.dumps(entries, indent=1))
        return 0
    if not entries:
        print(f"no token caches in {tokens_root()} (build one with `nima data prepare CONFIG.gin`)")
        return 0
    print(f"token caches in {tokens_root()}:")
    for e in entries:
        splits = ", ".join(f"{k} {v['tokens']:,}" for k, v in e["splits"].items())
        print(f"  {Path(e['path']).name}  {e['dataset']} / {e['tokenizer']['kind']} "
              f"vocab {e['tokenizer']['vocab_size']}  [{splits}]  "
              f"{e['size_bytes'] / 1e6:.1f} MB  {e['created']}")  # fmt: skip
    return 0
