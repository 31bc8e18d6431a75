"""`nima check`: the matrix, --json, --bench, the exit status, and a failing capability that
`nima run`'s capability check then refuses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import nima
from nima.capabilities import check_model, require, verdict_key, verdicts_path
from nima.errors import CapabilityError
from nima.hooks import PluginSystem

LEAKY = """
    from nima import hookimpl
    from nima_attention.reference import ReferenceAttention

    class Leaky(ReferenceAttention):
        '''The reference, but it ignores `causal`.'''
        def forward(self, q, k, v, *, causal, **kwargs):
            return super().forward(q, k, v, causal=False, **kwargs)

    @hookimpl
    def nima_register(registry):
        registry.attention("leaky", Leaky, capabilities={
            "backward": True, "devices": None, "dtypes": ["float32"], "bias": True})
"""


def install(root: Path, dist: str, module: str, body: str) -> None:
    """A throwaway installed distribution with a `nima` entry point (as test_plugin_loading)."""
    (root / f"{module}.py").write_text(textwrap.dedent(body))
    info = root / f"{dist.replace('-', '_')}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[nima]\n{module} = {module}\n")


def nima_check(*args: str, site: Path | None = None, cache: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "NIMA_DISABLE_PLUGINS"}
    env["NIMA_CACHE_DIR"], env["COLUMNS"] = str(cache), "200"  # rich tables unwrapped
    if site is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), env.get("PYTHONPATH")]))
    cmd = [sys.executable, "-m", "nima.cli", "check", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


def test_json_results_of_a_selection(tmp_path: Path) -> None:
    done = nima_check("attention.reference", "sampler.top_p", "sampler.typical", "--json",
                      cache=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)["results"]
    status = {(r["plugin"], r["capability"]): r["status"] for r in results}
    assert status[("attention.reference", "causal")] == "verified"
    assert status[("attention.reference", "bfloat16")] == "verified"
    assert status[("sampler.top_p", "rule")] == "verified"
    assert status[("sampler.typical", "rule")] == "verified"
    assert {r["plugin"].split(".")[0] for r in results} == {"attention", "sampler"}
    assert json.loads((tmp_path / "check" / "verdicts.json").read_text()) == {}


def test_a_broken_plugin_fails_the_check_and_is_then_refused(tmp_path: Path) -> None:
    site, cache = tmp_path / "site", tmp_path / "cache"
    site.mkdir()
    install(site, "leaky-attention", "leaky_attention", LEAKY)
    done = nima_check("leaky-attention", site=site, cache=cache)
    assert done.returncode == 1, done.stdout + done.stderr
    out = done.stdout
    assert "leaky (leaky-attention)" in out and "capability" in out  # a column per plugin
    assert "✗ attention.leaky breaks 'causal' (query i sees keys j <= i + Nk - Nq)" in " ".join(
        out.split()
    )
    verdicts = json.loads((cache / "check" / "verdicts.json").read_text())
    (key, failing), = verdicts.items()  # fmt: skip
    assert key == "attention.leaky leaky-attention==0.1 cpu"
    assert set(failing) == {"causal"}  # pinned: the other properties skip their causal cases


def test_a_failing_capability_is_not_trusted(tmp_path: Path, monkeypatch) -> None:
    """What `nima check` found failing is refused by the capability check before training."""
    monkeypatch.setenv("NIMA_CACHE_DIR", str(tmp_path))
    system = PluginSystem()
    system.load_entry_points()
    registry = system.registries["attention"]
    sdpa = registry.entry("sdpa")
    require(registry, sdpa, device="cpu", dtype="float16", backward=True)  # no verdict: trusted
    path = verdicts_path()
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({verdict_key(sdpa, "cpu"): {"float16": "sdpa breaks float16"}}))
    require(registry, sdpa, device="cpu", dtype="float32", backward=True)  # another dtype: fine
    require(registry, sdpa, device="cuda", dtype="float16", backward=True)  # another device
    with pytest.raises(CapabilityError, match="not trusted for this run: float16 .*nima check"):
        require(registry, sdpa, device="cpu", dtype="float16", backward=True)
    # a broken property refuses the plugin whatever the run needs
    path.write_text(json.dumps({verdict_key(sdpa, "cpu"): {"causal": "sdpa breaks causal"}}))
    with pytest.raises(CapabilityError, match="causal \\(declared, but failing in nima check\\)"):
        require(registry, sdpa, device="cpu", dtype="float32")


def test_check_model_refuses_an_untrusted_plugin_of_a_model(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("NIMA_CACHE_DIR", str(tmp_path))
    entry = nima.entry("attention", "sdpa")
    path = verdicts_path()
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({verdict_key(entry, "cpu"): {"backward": "broken gradients"}}))
    model = nima.get("model", "gpt")(
        vocab_size=32, n_layers=1, n_heads=2, d_model=16, context_length=8,
        attention=nima.get("attention", "sdpa")(), positional=nima.get("positional", "rope"),
    )  # fmt: skip
    check_model(
        model, nima.hooks.system().registries, device="cpu", dtype="float32", training=False
    )
    with pytest.raises(CapabilityError, match="'sdpa'.*backward"):
        check_model(model, nima.hooks.system().registries, device="cpu", dtype="float32")


def test_bench_times_plugins_next_to_their_reference(tmp_path: Path) -> None:
    done = nima_check("attention.sdpa", "norm.rmsnorm", "--bench", "--json", cache=tmp_path)
    assert done.returncode == 0, done.stderr
    bench = {t["plugin"]: t for t in json.loads(done.stdout)["bench"]}
    assert bench["attention.sdpa"]["against"] == "attention.reference"
    assert bench["norm.rmsnorm"]["against"] == "the rmsnorm formula in plain torch"
    assert all(t["plugin_ms"] > 0 and t["reference_ms"] > 0 for t in bench.values())


HALF_ONLY = """
    from nima import hookimpl
    from nima_attention.reference import ReferenceAttention

    class Half(ReferenceAttention):
        '''The reference, declared for float16 only.'''

    class NoLongSequences(ReferenceAttention):
        '''Refuses what --bench times: sequences over 64 tokens.'''
        def forward(self, q, k, v, **kwargs):
            if q.shape[2] > 64:
                raise ValueError("sequences over 64 tokens are not supported")
            return super().forward(q, k, v, **kwargs)

    @hookimpl
    def nima_register(registry):
        registry.attention("half", Half, capabilities={"dtypes": ["float16"]})
        registry.attention("short", NoLongSequences, capabilities={"dtypes": ["float32"]})
"""


def test_bench_times_in_a_declared_dtype_and_skips_what_cannot_run(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    install(site, "half-attention", "half_attention", HALF_ONLY)
    done = nima_check("half-attention", "--bench", site=site, cache=tmp_path / "cache")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    out = " ".join(done.stdout.split())
    assert out.index("capability") < out.index("--bench")  # the matrix first
    assert "attention.half │ attention.reference │ float16" in out, out  # its declared dtype
    assert "– attention.short not timed: raised ValueError: sequences over 64 tokens" in out


def test_an_unknown_selection_is_one_clear_error(tmp_path: Path) -> None:
    done = nima_check("nima_nothing", cache=tmp_path)
    assert done.returncode == 2
    assert done.stderr.startswith("error: 'nima_nothing' selects no registered plugin")
    assert "Traceback" not in done.stderr


def test_cuda_without_a_gpu_is_refused(tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    done = nima_check("attention.sdpa", "--device", "cuda", cache=tmp_path)
    assert done.returncode == 2 and "no CUDA device on this machine" in done.stderr


# --- what `nima check` found failing is refused wherever the plugin would run ----------------

SMOKE = Path(__file__).resolve().parents[1] / "experiments" / "smoke.gin"
QUICK = ["train.steps = 2", "train.eval_interval = 2", "train.sample_tokens = 2"]


def distrust(monkeypatch, tmp_path: Path, family: str, name: str, capability: str) -> None:
    """Record, as `nima check` would, that `family.name` fails `capability` on the CPU."""
    import nima.capabilities

    path = tmp_path / "verdicts.json"
    key = verdict_key(nima.entry(family, name), "cpu")
    path.write_text(json.dumps({key: {capability: f"{name} breaks {capability}"}}))
    monkeypatch.setattr(nima.capabilities, "verdicts_path", lambda: path)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    from nima.hooks import reset
    from nima.train.run import run_experiment

    run_dir = tmp_path_factory.mktemp("trusted") / "run"
    run_experiment([SMOKE], QUICK, reset(), run_dir=run_dir, show_progress=False)
    return run_dir


@pytest.mark.parametrize(
    ("family", "name", "capability"),
    [
        ("tokenizer", "char", "round_trip"),
        ("sampler", "temperature", "shape"),
        ("optimizer", "adamw", "loss_falls"),
        ("dataset", "shakespeare_char", "checksum"),
    ],
)
def test_nima_run_refuses_an_untrusted_plugin_beside_the_model(
    family: str, name: str, capability: str, tmp_path: Path, monkeypatch
) -> None:
    from nima.hooks import reset
    from nima.train.run import run_experiment

    distrust(monkeypatch, tmp_path, family, name, capability)
    with pytest.raises(
        CapabilityError, match=f"{family} plugin '{name}'.*not trusted.*{capability}"
    ):
        run_experiment([SMOKE], QUICK, reset(), run_dir=tmp_path / "run", show_progress=False)
    assert not (tmp_path / "run").exists()  # refused before anything is written


@pytest.mark.parametrize(
    ("family", "name", "capability"),
    [("attention", "sdpa", "causal"), ("tokenizer", "char", "round_trip")],
)
def test_a_loaded_run_with_an_untrusted_plugin_is_refused(
    family: str, name: str, capability: str, run_dir: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    """nima.load (generate, chat) and `nima attention` load runs through nima.runs.load_run."""
    from nima.cli import main

    nima.load(run_dir)  # trusted while no verdict says otherwise
    distrust(monkeypatch, tmp_path, family, name, capability)
    with pytest.raises(CapabilityError, match=f"'{name}'.*not trusted.*{capability}"):
        nima.load(run_dir)
    code = main(["attention", str(run_dir), "--text", "To be", "--out", str(tmp_path / "m.png")])
    assert code != 0 and "not trusted" in capsys.readouterr().err
    assert not (tmp_path / "m.png").exists()
