"""`nima chat`'s loop driven by scripted input: replies stream, /set changes the samplers in the
session (bad values refused), Ctrl-C stops a reply (not the session), /reset forgets."""

from __future__ import annotations

import torch

import nima
from nima.generate.api import LanguageModel
from nima.generate.chat import ChatSession, chat_loop
from nima.generate.options import Decoding


class Letters:
    eos_id = None

    def encode(self, text: str) -> list[int]:
        return [ord(c) % 32 for c in text]

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        return "".join(chr(ord("a") + i % 26) for i in ids)


def session(**options) -> ChatSession:
    torch.manual_seed(0)
    model = nima.get("model", "gpt")(
        vocab_size=32, context_length=24, d_model=16, n_layers=1, n_heads=2,
        attention=nima.get("attention", "sdpa")(), positional=nima.get("positional", "rope"),
    )  # fmt: skip
    return ChatSession(
        LanguageModel(model, Letters()), Decoding(), {"max_new_tokens": 6, **options}
    )


def drive(chat: ChatSession, lines: list, write=None) -> str:
    """Feed lines (a KeyboardInterrupt instance is a Ctrl-C at the prompt); returns the output."""
    shown: list[str] = []
    script = iter(lines)

    def read(prompt: str) -> str:
        item = next(script, None)
        if item is None:
            raise EOFError
        if isinstance(item, BaseException):
            raise item
        return item

    chat_loop(chat, read, write or shown.append)
    return "".join(shown)


def test_replies_stream_and_the_conversation_grows() -> None:
    chat = session()
    out = drive(chat, ["hello", "again"])
    assert chat.transcript.startswith("hello\n") and "\nagain\n" in chat.transcript
    reply = chat.transcript.split("\n")[1]
    assert len(reply) == 6 and reply in out


def test_set_changes_the_samplers_and_refuses_bad_values() -> None:
    chat = session()
    out = drive(chat, ["/set greedy on", "/set top_k 0", "/set top_p 2", "/set max_new_tokens 3",
                       "/set stop 'xy'", "/set bogus 1", "/show", "hi"])  # fmt: skip
    assert "greedy = on" in out and "not set: " in out and "no decoding setting 'bogus'" in out
    assert chat.decoding.greedy and chat.decoding.top_k is None and chat.decoding.top_p is None
    assert chat.max_new_tokens == 3 and chat.options["stop"] == ["xy"]
    assert "samplers: greedy; strategy: sample; max_new_tokens=3; stop: 'xy'" in out
    first = chat.transcript
    again = session()
    drive(again, ["/set greedy on", "/set max_new_tokens 3", "/set stop 'xy'", "hi"])
    assert again.transcript == first  # greedy: the same reply


def test_ctrl_c_stops_the_reply_not_the_session() -> None:
    chat = session(max_new_tokens=50)
    shown: list[str] = []
    pieces = 0

    def write(text: str) -> None:
        nonlocal pieces
        shown.append(text)
        if text and text not in ("\n", " [stopped]") and not text.startswith("nima chat"):
            pieces += 1
            if pieces == 3:
                raise KeyboardInterrupt  # Ctrl-C while the third piece is shown

    drive(chat, ["hello", KeyboardInterrupt(), "/show", "/reset"], write)
    out = "".join(shown)
    assert " [stopped]" in out and "Ctrl-C stops a reply" in out
    assert "samplers:" in out and "(conversation cleared)" in out and chat.transcript == ""


def test_given_samplers_and_strategy_apply_until_set_replaces_them() -> None:
    greedy = nima.get("sampler", "greedy")()
    chat = ChatSession(session().lm, Decoding(), {"max_new_tokens": 6}, [greedy],
                       nima.get("strategy", "beam")(num_beams=2))  # fmt: skip
    out = drive(chat, ["/show", "hi"])
    assert "samplers: Greedy(); strategy: Beam(num_beams=2" in out
    beam = session()
    beam.decoding.set("greedy", "on"), beam.decoding.set("strategy", "beam")
    beam.decoding.set("num_beams", "2")
    drive(beam, ["hi"])
    assert chat.transcript == beam.transcript  # gin's beam search answered, not sampling
    out = drive(chat, ["/set temperature 0.5", "/show"])
    assert "samplers: temperature=0.5; strategy: Beam(" in out  # the strategy stays
    out = drive(chat, ["/set strategy sample", "/show"])
    assert "samplers: temperature=0.5; strategy: sample" in out


def test_a_setting_that_cannot_answer_keeps_the_session() -> None:
    chat = session(overflow="stop")  # a line longer than the window (24) cannot be answered
    out = drive(chat, ["a" * 30, "/show", "/reset", "hi"])
    assert "not answered: " in out and "does not fit the model's context of 24" in out
    assert "samplers:" in out and chat.transcript.startswith("hi\n")


def test_with_overflow_stop_the_oldest_lines_make_room() -> None:
    chat = session(overflow="stop")  # window 24, replies of 6 tokens: prompts of at most 18
    drive(chat, ["a" * 12, "b" * 10])
    lines = chat.transcript.splitlines()  # "a"*12 left out: with its reply it passed 18
    assert lines[1] == "b" * 10 and [len(lines[0]), len(lines[2])] == [6, 6]  # replies in full
    drive(chat, ["c" * 4])  # 7 + 11 + 7 + 5 characters: the two oldest lines go
    lines = chat.transcript.splitlines()
    assert lines[1] == "cccc" and len(lines) == 3 and len(lines[2]) == 6


def test_bad_numbers_are_refused_with_what_is_valid() -> None:
    out = drive(session(), ["/set seed -1", "/set max_new_tokens 0", "/set seed x"])
    assert "not set: seed takes an integer >= 0, got '-1'" in out
    assert "not set: max_new_tokens takes an integer >= 1, got '0'" in out
    assert "not set: seed takes an integer >= 0, got 'x'" in out
