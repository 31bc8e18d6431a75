"""The conformance kit catches broken plugins, naming the property each breaks; the built-ins
pass it; the pytest plugin turns one line into one test per plugin and declared capability."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from nima_attention.reference import ReferenceAttention
from nima_positional.rope import RoPE
from nima_samplers.samplers import TopP
from nima_tokenizers.char import CharTokenizer

import nima
from nima.registry import Registry
from nima.testing.kit import FAILING, NOT_DECLARED, SKIPPED, VERIFIED, collect, run_check, select

ANYWHERE = {"backward": True, "devices": None, "dtypes": ["float32"]}


def results(family: str, name: str, obj, capabilities: dict) -> dict[str, object]:
    """Every check of one plugin registered on its own: {capability: Result}."""
    entry = Registry(family).register(name, obj, package="broken", capabilities=capabilities)
    return {c.capability: run_check(c) for c in collect([entry])}


class IgnoresCausal(ReferenceAttention):
    """The reference, but it attends to every key whatever `causal` says."""

    def forward(self, q, k, v, *, causal, **kwargs):
        return super().forward(q, k, v, causal=False, **kwargs)


def test_attention_that_ignores_causal_is_named() -> None:
    got = results("attention", "leaky", IgnoresCausal, {**ANYWHERE, "bias": True})
    causal = got["causal"]
    assert causal.status == FAILING
    assert "attention.leaky breaks 'causal' (query i sees keys j <= i + Nk - Nq)" in causal.message
    assert "out max relative error" in causal.message
    # the failure is pinned to `causal`: the other properties pass on their unmasked cases and
    # skip their causal ones, naming `causal`, rather than failing too
    others = {name: r.status for name, r in got.items() if name != "causal"}
    assert FAILING not in others.values(), others
    assert got["scale"].status == VERIFIED and got["head_dims"].status == VERIFIED
    assert got["gqa"].status == SKIPPED and "'causal' fails" in got["gqa"].message
    assert got["float64"].status == NOT_DECLARED  # dtypes declares float32 only


class IgnoresScale(ReferenceAttention):
    """The reference, but it always scales by 1/sqrt(D)."""

    def forward(self, q, k, v, *, scale=None, **kwargs):
        return super().forward(q, k, v, scale=None, **kwargs)


def test_attention_that_ignores_scale_fails_scale_alone() -> None:
    got = results("attention", "unscaled", IgnoresScale, {**ANYWHERE, "bias": True})
    assert got["scale"].status == FAILING
    assert "attention.unscaled breaks 'scale' (a custom softmax scale)" in got["scale"].message
    others = {name: r.status for name, r in got.items() if name != "scale"}
    assert FAILING not in others.values(), others
    assert got["masked_rows"].status == VERIFIED


class Jittery(ReferenceAttention):
    """The reference plus a random error far below fp32's tolerance: right, not deterministic."""

    def forward(self, q, k, v, **kwargs):
        out = super().forward(q, k, v, **kwargs)
        return out + 1e-9 * torch.rand_like(out) * (out != 0)  # rows with no key stay zero


def test_a_declared_deterministic_attention_is_checked() -> None:
    got = results("attention", "jittery", Jittery, {**ANYWHERE, "deterministic": True})
    assert got["deterministic"].status == FAILING
    assert "out differs between two identical calls" in got["deterministic"].message
    assert got["causal"].status == VERIFIED
    plain = results("attention", "plain", ReferenceAttention, {**ANYWHERE, "deterministic": True})
    assert plain["deterministic"].status == VERIFIED
    assert results("attention", "j", Jittery, ANYWHERE)["deterministic"].status == NOT_DECLARED


class OnlyHeadDim64(ReferenceAttention):
    """Supports head dim 64 only, as many fused kernels support a few."""

    def forward(self, q, k, v, **kwargs):
        if q.shape[-1] != 64:
            raise ValueError(f"head dim {q.shape[-1]} is not supported")
        return super().forward(q, k, v, **kwargs)


def test_cases_use_the_declared_head_dims() -> None:
    got = results("attention", "d64", OnlyHeadDim64, {**ANYWHERE, "head_dims": [64]})
    assert all(r.status == VERIFIED for r in got.values() if r.check.declared), got
    assert got["head_dims"].check.what == "head dims 64"
    got = results("attention", "d32", ReferenceAttention, {**ANYWHERE, "head_dims": [32]})
    assert got["head_dims"].status == VERIFIED and got["head_dims"].check.what == "head dims 32"
    wide = results("attention", "any", ReferenceAttention, {**ANYWHERE, "head_dims": range(1, 257)})
    assert wide["head_dims"].check.what == "head dims 1, 52, 103, 154, 205, 256"


class CausalOnly(ReferenceAttention):
    """Supports a top-left causal mask with Nq == Nk only (masks ["causal"])."""

    def forward(self, q, k, v, *, key_padding_mask=None, **kwargs):
        if q.shape[2] != k.shape[2] or key_padding_mask is not None:
            raise NotImplementedError("Nq != Nk and key padding are not supported")
        return super().forward(q, k, v, **kwargs)


def test_cases_use_only_the_declared_masks() -> None:
    got = results("attention", "square", CausalOnly, {**ANYWHERE, "masks": ["causal"]})
    status = {name: r.status for name, r in got.items()}
    assert FAILING not in status.values(), got
    assert status["causal"] == status["odd_lengths"] == status["float32"] == VERIFIED
    for needs_more in ("nq_ne_nk", "key_padding", "masked_rows"):
        assert status[needs_more] == NOT_DECLARED
        assert "needs masks it does not declare" in got[needs_more].message


class Windowed(ReferenceAttention):
    """A plugin with a required constructor argument."""

    def __init__(self, window: int) -> None:
        super().__init__()
        self.window = window


def test_a_plugin_with_required_arguments_is_skipped_until_given_them() -> None:
    got = results("attention", "windowed", Windowed, ANYWHERE)
    assert {r.status for r in got.values() if r.check.declared} == {SKIPPED}
    assert "cannot be built without window" in got["causal"].message
    assert "check_kwargs" in got["causal"].message
    given = results("attention", "windowed", Windowed, {**ANYWHERE, "check_kwargs": {"window": 8}})
    assert given["causal"].status == VERIFIED
    entry = Registry("attention").register("windowed", Windowed, package="p", capabilities=ANYWHERE)
    checks = collect([entry], kwargs={"attention.windowed": {"window": 8}})
    assert all(run_check(c).status == VERIFIED for c in checks if c.declared)


def test_every_family_builds_through_the_kit() -> None:
    """A required argument of any family's plugin is a skip naming it, never a failure."""

    class NeedsPath:  # takes whatever its family passes, but it also needs a path
        def __init__(self, *args, path: str, **kwargs) -> None:
            self.path = path

    for family in ("positional", "norm", "mlp", "tokenizer", "sampler", "optimizer",
                   "scheduler", "dataset", "logger"):  # fmt: skip
        entry = Registry(family).register("needs_path", NeedsPath, package="p")
        for check in collect([entry]):
            if check.declared:
                result = run_check(check)
                assert result.status == SKIPPED, (family, result)
                assert "cannot be built without path" in result.message


class TopPKeepsOneMore:
    """Keeps the smallest set reaching p, plus the next token."""

    def __init__(self, p: float = 0.9) -> None:
        self.p, self.top_p = p, TopP(p)

    def __call__(self, ids, logits):
        order = logits.argsort(dim=-1, descending=True)
        kept = self.top_p(ids, logits) > float("-inf")
        n = kept.sum(-1, keepdim=True).clamp(max=logits.size(-1) - 1)
        extra = torch.zeros_like(kept).scatter(-1, order.gather(-1, n), True)
        return logits.masked_fill(~(kept | extra), float("-inf"))


def test_top_p_that_keeps_too_much_is_named() -> None:
    got = results("sampler", "greedy_p", TopPKeepsOneMore, {"kind": "processor", "rule": "top_p"})
    assert got["shape"].status == VERIFIED
    rule = got["rule"]
    assert rule.status == FAILING
    assert "sampler.greedy_p breaks 'rule' (the top_p rule)" in rule.message
    assert "not the smallest set" in rule.message


def test_the_real_top_p_passes() -> None:
    got = results("sampler", "top_p", TopP, {"kind": "processor", "rule": "top_p"})
    assert got["rule"].status == VERIFIED, got["rule"].message


class PenalisesEveryToken:
    """A presence penalty that also lowers the tokens never seen."""

    penalty = 0.5

    def __call__(self, ids, logits):
        seen = torch.zeros_like(logits, dtype=torch.bool).scatter(-1, ids, True)
        return logits - self.penalty * (seen.to(logits.dtype) + 0.1)


class BansNothing:
    n = 2

    def __call__(self, ids, logits):
        return logits.clone()


class TypicalIsTopP(TopP):
    """Calls itself typical but keeps the top-p set."""

    def __init__(self) -> None:
        super().__init__(0.9)
        self.mass = 0.9


@pytest.mark.parametrize(
    ("plugin", "rule", "says"),
    [
        (PenalisesEveryToken, "presence_penalty", "only the tokens seen in ids change"),
        (BansNothing, "no_repeat_ngram", "the tokens completing an n-gram already in ids"),
        (TypicalIsTopP, "typical", "not the most typical"),
    ],
)
def test_broken_penalty_ngram_and_typical_samplers_are_named(plugin, rule, says) -> None:
    got = results("sampler", "broken", plugin, {"kind": "processor", "rule": rule})["rule"]
    assert got.status == FAILING and says in got.message, got.message


@pytest.mark.parametrize(
    "rule",
    ["typical", "repetition_penalty", "frequency_penalty", "presence_penalty", "no_repeat_ngram"],
)
def test_the_real_samplers_keep_their_rule(rule: str) -> None:
    got = results("sampler", rule, nima.get("sampler", rule), {"kind": "processor", "rule": rule})
    assert got["rule"].status == VERIFIED, got["rule"].message


class DropsACharacter(CharTokenizer):
    """A char tokenizer that loses one character when encoding."""

    dropped = "q"

    def _encode_text(self, text: str) -> list[int]:
        return super()._encode_text(text.replace(self.dropped, ""))


@pytest.mark.parametrize("dropped", ["q", "g", "~", "日"])
def test_tokenizer_that_drops_a_character_is_named(dropped: str) -> None:
    lossy = type("Lossy", (DropsACharacter,), {"dropped": dropped})
    got = results("tokenizer", "lossy", lossy, {"unk": True})
    trip = got["round_trip"]
    assert trip.status == FAILING
    assert "tokenizer.lossy breaks 'round_trip'" in trip.message
    assert "decode(encode(text))" in trip.message
    assert got["save_load"].status == VERIFIED


def test_a_tokenizer_that_declares_no_unk_must_round_trip_any_text() -> None:
    got = results("tokenizer", "char", CharTokenizer, {})
    assert got["any_text"].check.declared  # absent `unk` is False, as the docs say
    assert got["any_text"].status == FAILING  # a char tokenizer maps unseen characters to unk


class HalfWritten:
    """A logger whose close() breaks once one of its own writes failed half-way."""

    def __init__(self) -> None:
        self.writing = False

    @nima.hookimpl
    def nima_train_step(self, run, step, metrics) -> None:
        self.writing = True
        print(step, dict(metrics))  # the error of its own: metrics that cannot be read
        self.writing = False

    def close(self) -> None:
        if self.writing:
            raise OSError("close() after a half-done write")


class Silent:
    @nima.hookimpl
    def nima_train_step(self, run, step, metrics) -> None:
        pass

    def close(self) -> None:
        pass


def test_a_logger_is_checked_on_its_own_error() -> None:
    got = results("logger", "half", HalfWritten, {})
    assert got["events"].status == VERIFIED
    assert got["own_error"].status == FAILING
    assert "close() after a half-done write" in got["own_error"].message
    silent = results("logger", "silent", Silent, {})["own_error"]
    assert silent.status == SKIPPED and "never read their metrics" in silent.message


class AbsoluteRotation(RoPE):
    """RoPE whose angle also grows with the absolute position squared: not relative."""

    def prepare(self, positions):
        return super().prepare(positions + positions.square() // 7)


def test_rotation_that_is_not_relative_is_named() -> None:
    caps = {"backward": True, "devices": None, "acts_on": ["rotate"]}
    got = results("positional", "absolute_rope", AbsoluteRotation, caps)
    assert got["chunked"].status == VERIFIED  # explicit positions: still the same per position
    assert got["relative"].status == FAILING
    assert "breaks 'relative'" in got["relative"].message
    assert "changed q . k" in got["relative"].message


class PlainCallable:
    """An attention plugin that is no nn.Module: the contract asks only for a callable."""

    def __call__(self, q, k, v, **kwargs):
        return ReferenceAttention()(q, k, v, **kwargs)


def test_an_attention_plugin_need_not_be_a_module() -> None:
    got = results("attention", "plain", PlainCallable, {**ANYWHERE, "bias": True})
    assert all(r.status in (VERIFIED, NOT_DECLARED) for r in got.values()), got


def test_a_crash_is_a_failure_naming_the_exception() -> None:
    class Crashes(ReferenceAttention):
        def forward(self, *args, **kwargs):
            raise RuntimeError("boom")

    got = results("attention", "crashes", Crashes, ANYWHERE)
    assert got["gqa"].status == FAILING
    assert "raised RuntimeError: boom" in got["gqa"].message


@pytest.mark.slow
def test_every_builtin_passes_on_cpu() -> None:
    """Every declared check of every built-in on CPU, the Triton kernels through the interpreter
    (conftest sets TRITON_INTERPRET=1): none fails; the only skips are plugins that need a path
    (dataset.text_file, tokenizer.file). Measured on the shared 2-core machine: 53 s, and 236 s
    when its cores were busier; most of it Triton's interpreter and fused Adam's first call."""
    checks = collect(select(nima.plugins(), ["nima"]), device="cpu")
    outcome = [run_check(c) for c in checks if c.declared]
    failing = [str(r) for r in outcome if r.status == FAILING]
    assert not failing, "\n".join(failing)
    skipped = {f"{r.check.family}.{r.check.plugin}" for r in outcome if r.status == SKIPPED}
    assert skipped <= {"dataset.text_file", "tokenizer.file"}, skipped  # they need a path
    assert sum(r.status == VERIFIED for r in outcome) > 100


def test_select_names_packages_families_and_plugins() -> None:
    entries = nima.plugins()
    assert {e.family for e in select(entries, ["attention"])} == {"attention"}
    assert [e.name for e in select(entries, ["sampler.top_k"])] == ["top_k"]
    with pytest.raises(nima.NimaError, match="'nima_nothing' selects no registered plugin"):
        select(entries, ["nima_nothing"])


BROKEN_PACKAGE = '''
    """A test module of a plugin package whose attention ignores `causal`."""
    from nima.hooks import system
    from nima.testing.conformance import conformance
    from nima_attention.reference import ReferenceAttention

    class Leaky(ReferenceAttention):
        def forward(self, q, k, v, *, causal, **kwargs):
            return super().forward(q, k, v, causal=False, **kwargs)

    class Plugin:
        from nima import hookimpl

        @staticmethod
        @hookimpl
        def nima_register(registry):
            registry.attention("leaky", Leaky, capabilities={"backward": True, "dtypes": ["float32"]})

    system().add_plugin(Plugin, package="leaky-attention")

    test_leaky = conformance("leaky-attention")
'''


def run_pytest(folder: Path, name: str, source: str, report: str) -> subprocess.CompletedProcess:
    """pytest on `source` written as `folder`/`name`, in a child process, as a plugin package's
    own test run would be (`report`: pytest's -r characters)."""
    (folder / name).write_text(textwrap.dedent(source))
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"-r{report}", str(folder)]
    return subprocess.run(cmd, cwd=folder, env=env, capture_output=True, text=True, timeout=300)


def test_pytest_plugin_makes_one_test_per_declared_capability(tmp_path: Path) -> None:
    done = run_pytest(tmp_path, "test_leaky.py", BROKEN_PACKAGE, "f")
    out = done.stdout
    assert done.returncode == 1, out + done.stderr
    assert "test_leaky[attention.leaky:causal]" in out
    assert "attention.leaky breaks 'causal' (query i sees keys j <= i + Nk - Nq)" in out
    assert "test_leaky[attention.leaky:float16]" not in out  # not declared: not a test
    failed = {
        line.split("[")[1].split("]")[0] for line in out.splitlines() if line.startswith("FAILED")
    }
    assert failed == {"attention.leaky:causal"}, out  # the others skip their causal cases
    assert "attention.leaky:scale" not in failed


WINDOWED_PACKAGE = '''
    """A plugin package whose attention needs a constructor argument, given to the kit."""
    from nima.hooks import system
    from nima.testing.conformance import conformance
    from nima_attention.reference import ReferenceAttention

    class Windowed(ReferenceAttention):
        def __init__(self, window):
            super().__init__()

    class Plugin:
        from nima import hookimpl

        @staticmethod
        @hookimpl
        def nima_register(registry):
            registry.attention("windowed", Windowed, capabilities={"dtypes": ["float32"]})

    system().add_plugin(Plugin, package="windowed-attention")

    test_bare = conformance("windowed-attention")
    test_given = conformance("windowed-attention", kwargs={"attention.windowed": {"window": 8}})
'''


def test_conformance_takes_constructor_arguments(tmp_path: Path) -> None:
    done = run_pytest(tmp_path, "test_windowed.py", WINDOWED_PACKAGE, "s")
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    # test_bare: every check skipped, naming the missing argument; test_given: every one passes
    assert " 0 failed" not in out and "failed" not in out, out
    count = out.count("cannot be built without window")
    passed = int(out.split(" passed")[0].split()[-1])
    assert count >= 1 and passed >= 8, out


def test_the_pytest_plugin_is_cheap_for_projects_that_do_not_use_it() -> None:
    """pytest loads it in every project (pytest11): it must not import torch or any plugin."""
    code = (
        "import sys, nima.testing.pytest_plugin; "
        "heavy = [m for m in sys.modules if m.split('.')[0] in "
        "('torch', 'triton', 'nima_attention', 'hypothesis', 'matplotlib')]; "
        "assert not heavy, heavy"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
