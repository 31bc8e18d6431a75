"""nima.bench and `nima bench attention`: rows, FLOP accounting, speedups, any registered plugin,
skips that say why, and a JSON file that never lands on the committed results by default."""

from __future__ import annotations

import importlib
import json
import textwrap
from pathlib import Path

import pytest

import nima.hooks
from nima import cli
from nima.bench import BenchShape, format_table, run_attention_bench, write_json

PLUGINS = """
    import torch
    from nima import hookimpl

    class Tiny:
        '''Unmasked softmax attention: a third-party plugin for the benchmark tests.'''
        def __call__(self, q, k, v, *, causal, scale=None, key_padding_mask=None):
            return torch.softmax(q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5, -1) @ v

    @hookimpl
    def nima_register(registry):
        anywhere = {"devices": None, "dtypes": None, "head_dims": None}
        registry.attention("tiny", Tiny, capabilities={**anywhere, "backward": True})
        registry.attention("fwd_only", Tiny, capabilities={**anywhere, "backward": False})
        registry.attention("gpu_only", Tiny, capabilities={"backward": True, "devices": ["cuda"]})
        registry.attention(
            "interpreted", Tiny,
            capabilities={"backward": True, "devices": ["cuda", "cpu"],
                          "interpreter": {"cpu": "set TINY_INTERPRET=1"}},
        )
"""


@pytest.fixture
def tiny_plugins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An installed third-party package `tiny-bench` (found through its `nima` entry point);
    the current directory is an empty folder."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "tiny_bench.py").write_text(textwrap.dedent(PLUGINS))
    info = site / "tiny_bench-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tiny-bench\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[nima]\ntiny_bench = tiny_bench\n")
    importlib.invalidate_caches()
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.delenv("NIMA_DISABLE_PLUGINS", raising=False)
    monkeypatch.setattr(nima.hooks, "_system", None)  # restored after the test
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


def bench(*args: str) -> int:
    return cli.main(["bench", "attention", "--device", "cpu", "--quick", *args])


def test_forward_flops_halve_when_causal():
    full, causal = BenchShape(2, 4, 4, 64, 32, False), BenchShape(2, 4, 4, 64, 32, True)
    assert full.forward_flops() == 4 * 2 * 4 * 64 * 64 * 32
    assert causal.forward_flops() == full.forward_flops() / 2


def test_cpu_bench_rows_and_json(tmp_path):
    shape = BenchShape(1, 2, 1, 32, 16, True)
    result = run_attention_bench(
        "cpu", "float32", [shape], impls=["reference", "sdpa"], min_time_s=0.01
    )
    rows = result.rows
    assert {(r["impl"], r["pass"]) for r in rows} == {
        (impl, p) for impl in ("reference", "sdpa") for p in ("fwd", "fwd+bwd")
    }
    for row in rows:
        factor = 3.5 if row["pass"] == "fwd+bwd" else 1.0
        expected = shape.forward_flops() * factor / (row["ms"] * 1e-3) / 1e12
        assert row["tflops"] == pytest.approx(expected)
        assert row["peak_mib"] is None  # not measured on CPU, and not pretended
    reference = next(r for r in rows if r["impl"] == "reference" and r["pass"] == "fwd")
    sdpa = next(r for r in rows if r["impl"] == "sdpa" and r["pass"] == "fwd")
    assert reference["vs_reference"] == pytest.approx(1.0)
    assert sdpa["vs_reference"] == pytest.approx(reference["ms"] / sdpa["ms"])
    path = write_json(result, tmp_path / "deep" / "bench.json")
    saved = json.loads(path.read_text())
    assert saved["rows"] == rows and saved["meta"]["device"] == "cpu"
    assert saved["meta"]["device_name"].startswith("cpu") and saved["skipped"] == {}
    table = format_table(result)
    assert shape.label in table and "n/a" in table


def test_any_registered_plugin_is_benchmarked_and_each_skip_says_why(tiny_plugins, capsys):
    out = tiny_plugins / "results" / "mine.json"
    code = bench(
        "--impl", "tiny", "--impl", "fwd_only", "--impl", "gpu_only", "--impl", "interpreted",
        "--out", str(out),
    )  # fmt: skip
    stdout = capsys.readouterr().out
    assert code == 0
    rows = json.loads(out.read_text())["rows"]
    tiny = [r for r in rows if r["impl"] == "tiny"]
    assert len(tiny) == 8 and all(r["status"] == "ok" and r["ms"] > 0 for r in tiny)  # 4 shapes
    forward_only = {r["pass"]: r["status"] for r in rows if r["impl"] == "fwd_only"}
    assert forward_only == {"fwd": "ok", "fwd+bwd": "skipped: does not support backward"}
    assert {r["impl"] for r in rows} == {"tiny", "fwd_only"}
    assert "skipped gpu_only: does not support device=cpu (it supports" in stdout
    assert "skipped interpreted: runs on cpu only through an interpreter" in stdout
    skipped = json.loads(out.read_text())["skipped"]
    assert set(skipped) == {"gpu_only", "interpreted"}
    assert f"wrote {out}" in stdout


def test_nothing_to_time_is_an_error_and_writes_nothing(tiny_plugins, capsys):
    assert bench("--impl", "gpu_only") == 2
    err = capsys.readouterr().err
    assert "Nothing to time on cpu with float32" in err
    assert "gpu_only does not support device=cpu" in err
    assert list(tiny_plugins.iterdir()) == []


def test_unknown_impl_names_the_closest_plugin(tiny_plugins, capsys):
    assert bench("--impl", "tinx") == 2
    err = capsys.readouterr().err
    assert "Unknown attention plugin 'tinx'. Did you mean 'tiny'" in err
    assert "sdpa_flash" in err  # the CUDA baselines are named too
    assert list(tiny_plugins.iterdir()) == []


def test_default_output_is_a_fresh_file_under_runs(tiny_plugins, capsys):
    """Never the committed benchmarks/results: each run gets its own new file under ./runs."""
    assert bench("--impl", "fwd_only") == 0
    assert bench("--impl", "fwd_only") == 0
    written = sorted((tiny_plugins / "runs").iterdir())
    assert len(written) == 2 and all(p.name.startswith("bench-attention-cpu") for p in written)
    assert all(json.loads(p.read_text())["rows"] for p in written)
    assert [p.name for p in tiny_plugins.iterdir()] == ["runs"]
    assert f"wrote {Path('runs') / written[1].name}" in capsys.readouterr().out
