"""`nima chat RUN_DIR`: an interactive loop over a run's model, replies streamed.

The model sees the whole conversation so far (your lines and its replies, as one text, the
window sliding past context_length) and continues it. Lines starting with / are commands:

    /set NAME VALUE   change a setting: temperature 0.7, top_k 40, top_p off, greedy on,
                      max_new_tokens 100, stop "\\n\\n", seed 3 (any sampler; /show lists them)
    /show             the current settings        /reset   forget the conversation
    /help             this text                   /quit    leave (or Ctrl-D)

The samplers and strategy given at start (--config's generation.samplers / .strategy, or the
options) answer until a /set changes them. A turn that cannot be answered (a bad setting, or
a line longer than the window with --context-overflow stop) says why; the session goes on.
With --context-overflow stop the oldest lines are left out so the reply has room.

Ctrl-C stops the reply being written (what it wrote so far stays in the conversation); at the
prompt it only reminds you how to leave.
"""

from __future__ import annotations

import argparse
import ast
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nima.errors import ConfigError, NimaError
from nima.generate.api import LanguageModel
from nima.generate.options import SAMPLER_ORDER, Decoding


class ChatSession:
    """The conversation and its settings; `say` streams the model's reply to a line."""

    def __init__(
        self,
        lm: LanguageModel,
        decoding: Decoding,
        options: dict[str, Any],
        samplers: list[Any] | None = None,
        strategy: Any = None,
    ) -> None:
        self.lm, self.decoding = lm, decoding
        # built instances (gin's generation.samplers / .strategy, or the command line's): used
        # until a /set changes the samplers (or the strategy); None: built from `decoding`
        self.samplers, self.strategy = samplers, strategy
        self.max_new_tokens = options.pop("max_new_tokens", 200)
        self.options = options  # stop, seed, ignore_eos, overflow
        self.transcript = ""
        self.turn = 0

    def command(self, line: str) -> str:
        """Run a /command; returns what to show."""
        name, _, rest = line[1:].strip().partition(" ")
        if name == "help":
            return __doc__.split("commands:\n\n", 1)[1].rsplit("\n\nCtrl-C", 1)[0]
        if name == "show":
            stops = ", ".join(map(repr, self.options.get("stop", []))) or "none"
            return (f"{self.describe()}; max_new_tokens={self.max_new_tokens}; "
                    f"stop: {stops}; seed={self.options.get('seed', 0)}")  # fmt: skip
        if name == "reset":
            self.transcript = ""
            return "(conversation cleared)"
        if name != "set":
            return f"unknown command /{name}; /help lists them"
        setting, _, value = rest.strip().partition(" ")
        value = value.strip()
        if not setting or not value:
            return "usage: /set NAME VALUE (e.g. /set temperature 0.7); /show lists the settings"
        try:
            if setting == "stop":
                self.options["stop"] = [] if value == "off" else [_unquote(value)]
            elif setting in ("max_new_tokens", "seed"):
                least = 1 if setting == "max_new_tokens" else 0
                try:
                    number = int(value)
                except ValueError:
                    number = least - 1
                if number < least:
                    raise ConfigError(f"{setting} takes an integer >= {least}, got {value!r}")
                if setting == "seed":
                    self.options["seed"] = number
                else:
                    self.max_new_tokens = number
            else:
                self.decoding.set(setting, value)
                if setting in (*SAMPLER_ORDER, "greedy"):
                    self.samplers = None  # the settings replace gin's sampler list
                else:
                    self.strategy = None  # and gin's strategy
        except NimaError as exc:
            return f"not set: {exc}"
        return f"{setting} = {value}"

    def describe(self) -> str:
        """The samplers and strategy in use (the instances given, or the /set settings)."""
        ours = self.decoding.describe()
        if self.samplers is None and self.strategy is None:
            return ours
        samplers, strategy = ours.split("; strategy: ")
        if self.samplers is not None:
            samplers = "samplers: " + (", ".join(map(_plugin, self.samplers)) or "none")
        if self.strategy is not None:
            strategy = _plugin(self.strategy)
        return f"{samplers}; strategy: {strategy}"

    def fitted(self, prompt: str) -> str:
        """With --context-overflow stop, the prompt without its oldest lines, so that it leaves
        the window room for the reply (max_new_tokens, at most half the window); the window
        slides otherwise, and a last line too long alone is left for the engine to refuse."""
        if self.options.get("overflow", "slide") != "stop":
            return prompt
        window = self.lm.model.context_length
        budget = window - min(self.max_new_tokens, window // 2)
        lines = prompt.splitlines(keepends=True)
        while len(lines) > 1 and len(self.lm.tokenizer.encode("".join(lines))) > budget:
            lines.pop(0)
        return "".join(lines)

    def say(self, line: str, write: Callable[[str], Any]) -> str:
        """Stream the reply to `line` through write; Ctrl-C ends it early. Returns the reply."""
        prompt = self.fitted(self.transcript + line + "\n")
        options = dict(self.options, seed=self.options.get("seed", 0) + self.turn)
        self.turn += 1
        samplers = self.decoding.chain() if self.samplers is None else self.samplers
        strategy = self.decoding.build_strategy() if self.strategy is None else self.strategy
        reply = ""
        try:
            for piece in self.lm.stream(prompt, self.max_new_tokens, samplers, strategy,
                                        **options):  # fmt: skip
                reply += piece
                write(piece)
        except KeyboardInterrupt:
            write(" [stopped]")
        except NimaError as exc:  # a setting that cannot answer: the session goes on
            write(f"{reply and chr(10)}not answered: {exc} (/show lists the settings; /reset "
                  f"forgets the conversation)\n")  # fmt: skip
            return ""
        write("\n")
        self.transcript = prompt + reply + "\n"
        return reply


def _plugin(instance: Any) -> str:
    """A plugin instance as name(settings), e.g. TopK(k=40)."""
    settings = ", ".join(f"{k}={v!r}" for k, v in vars(instance).items() if k != "draft")
    return f"{type(instance).__name__}({settings})"


def _unquote(text: str) -> str:
    """A quoted value as Python reads it ("\\n\\n" is two newlines), else the text itself."""
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        try:
            return ast.literal_eval(text)
        except (ValueError, SyntaxError):
            pass
    return text


def chat_loop(
    session: ChatSession, read: Callable[[str], str], write: Callable[[str], Any]
) -> None:
    """Read lines until /quit or end of input; a line is a command or a turn of the talk."""
    write("nima chat: type a line and press enter; /help for commands, /quit to leave.\n")
    while True:
        try:
            line = read("> ")
        except EOFError:
            write("\n")
            return
        except KeyboardInterrupt:
            write("\n(Ctrl-C stops a reply; /quit or Ctrl-D leaves)\n")
            continue
        if line.strip() in ("/quit", "/exit"):
            return
        if line.startswith("/"):
            write(session.command(line) + "\n")
        elif line:
            session.say(line, write)


def cmd_chat(args: argparse.Namespace) -> int:
    import sys

    from nima.generate.cli import decoding_from_args
    from nima.generate.from_run import load
    from nima.hooks import for_command

    system = for_command(args.disable_plugins)
    lm = load(args.run_dir, args.checkpoint, args.device, system)
    samplers, strategy, options, decoding = decoding_from_args(args, args.run_dir, system)
    # gin's instances where they differ from what the settings build (/show names them)
    if list(map(_plugin, samplers)) == list(map(_plugin, decoding.chain())):
        samplers = None
    if _plugin(strategy) == _plugin(decoding.build_strategy()):
        strategy = None
    session = ChatSession(lm, decoding, options, samplers, strategy)

    def write(text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    chat_loop(session, input, write)
    return 0


def add_chat_arguments(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    from nima.generate.cli import add_decoding_arguments

    chat = sub.add_parser("chat", parents=parents, help="talk with a run's model, replies streamed")
    chat.add_argument("run_dir", type=Path)
    add_decoding_arguments(chat)
    chat.set_defaults(func=cmd_chat)
