"""nima.bench: rows, FLOP accounting, speedups and the JSON file, on one tiny shape."""

from __future__ import annotations

import json

import pytest
import torch

from nima.bench import BenchShape, format_table, results_path, run_attention_bench


def test_forward_flops_halve_when_causal():
    full, causal = BenchShape(2, 4, 4, 64, 32, False), BenchShape(2, 4, 4, 64, 32, True)
    assert full.forward_flops() == 4 * 2 * 4 * 64 * 64 * 32
    assert causal.forward_flops() == full.forward_flops() / 2


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU rows")
def test_cpu_bench_rows_and_json(tmp_path):
    shape = BenchShape(1, 2, 1, 32, 16, True)
    rows = run_attention_bench("cpu", "float32", [shape], out_dir=tmp_path, min_time_s=0.01)
    assert {(r["impl"], r["pass"]) for r in rows} == {
        (impl, p) for impl in ("reference", "sdpa", "triton") for p in ("fwd", "fwd+bwd")
    }
    for row in rows:
        if row["impl"] == "triton":  # the interpreter is never timed
            assert row["ms"] is None and "interpreter" in row["status"]
            continue
        factor = 3.5 if row["pass"] == "fwd+bwd" else 1.0
        expected = shape.forward_flops() * factor / (row["ms"] * 1e-3) / 1e12
        assert row["tflops"] == pytest.approx(expected)
        assert row["peak_mib"] is None  # not measured on CPU, and not pretended
    reference = next(r for r in rows if r["impl"] == "reference" and r["pass"] == "fwd")
    sdpa = next(r for r in rows if r["impl"] == "sdpa" and r["pass"] == "fwd")
    assert reference["vs_reference"] == pytest.approx(1.0)
    assert sdpa["vs_reference"] == pytest.approx(reference["ms"] / sdpa["ms"])
    saved = json.loads(results_path("cpu", tmp_path).read_text())
    assert saved["rows"] == rows and saved["meta"]["device"] == "cpu"
    assert results_path("cpu", tmp_path).parent.name.startswith("cpu")
    table = format_table(rows)
    assert shape.label in table and "n/a" in table
