"""The optimizer step: gradient accumulation equals one big batch; mixed precision through
autocast, its capability check on the compute dtype, fp16 refused off CUDA."""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import nima
from nima.errors import CapabilityError, ConfigError
from nima.hooks import reset
from nima.train import trainer as trainer_module
from nima.train.run import run_experiment
from nima.train.settings import TrainSettings
from nima.train.trainer import Trainer, check_model_plugins, resolve_precision

SMOKE = Path(__file__).resolve().parents[1] / "experiments" / "smoke.gin"
VOCAB = 11


def tiny_gpt(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    parts = dict(
        attention=nima.get("attention", "sdpa")(), positional=nima.get("positional", "rope")
    )
    return nima.get("model", "gpt")(
        vocab_size=VOCAB, context_length=8, d_model=16, n_layers=2, n_heads=2, **parts
    )


def make_trainer(optimizer: str = "sgd", lr: float = 0.5, **options) -> Trainer:
    settings = TrainSettings(
        optimizer=functools.partial(nima.get("optimizer", optimizer), lr=lr),
        scheduler=nima.get("scheduler", "constant"),
        grad_clip=0.0,  # clipping would hide a wrongly scaled gradient
        eval_batches=1,
        **options,
    )
    ids = (np.arange(4000) * 7 + np.arange(4000) // 5) % VOCAB  # learnable, not trivial
    splits = {"train": ids, "val": ids[:500]}
    return Trainer(settings, tiny_gpt(), splits, torch.device("cpu"), reset(), {})


def test_four_micro_batches_of_two_step_as_one_batch_of_eight() -> None:
    big = make_trainer(batch_size=8, accumulation_steps=1)
    micro = make_trainer(batch_size=2, accumulation_steps=4)
    for _ in range(3):
        (x8, y8), parts = big.train_batches.next_step()[0], micro.train_batches.next_step()
        assert len(parts) == 4 and all(x.shape == (2, 8) for x, _ in parts)
        assert torch.equal(torch.cat([x for x, _ in parts]), x8)  # the same windows
        loss8, norm8 = big.train_step([(x8, y8)])
        loss2x4, norm2x4 = micro.train_step(parts)
        assert loss2x4 == pytest.approx(loss8, rel=1e-6) and norm2x4 == pytest.approx(norm8, rel=1e-5)
    # SGD is linear in the gradient: an unscaled sum of 4 micro-batch losses would be 4x off
    for (name, a), b in zip(big.model.named_parameters(), micro.model.parameters(), strict=True):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6, msg=name)


def test_bf16_autocasts_the_forward_and_trains_on_cpu() -> None:
    trainer = make_trainer(optimizer="adamw", lr=1e-2, precision="bf16", batch_size=4)
    with trainer.autocast():
        out = trainer.model.lm_head(torch.randn(2, 16))
    assert out.dtype == torch.bfloat16
    assert next(trainer.model.parameters()).dtype == torch.float32  # weights stay fp32
    losses = [trainer.train_step(trainer.train_batches.next_step())[0] for _ in range(30)]
    assert all(np.isfinite(losses)) and np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5])
    assert not trainer.scaler.is_enabled()  # bf16 needs no loss scaling


def test_fp16_on_cpu_is_refused_before_the_run_directory_is_written(tmp_path) -> None:
    bindings = ["train.dataset = @dataset.techqa()", "train.precision = 'fp16'"]
    with pytest.raises(ConfigError, match=r"'fp16' needs a CUDA device.*Use 'bf16' or 'fp32'"):
        run_experiment([SMOKE], bindings, reset(), run_dir=tmp_path / "run", show_progress=False)
    assert not (tmp_path / "run").exists()


def test_precision_is_checked_at_parse(tmp_path) -> None:
    with pytest.raises(ConfigError, match="fp64"):
        run_experiment(
            [SMOKE], ["train.precision = 'fp64'"], reset(), run_dir=tmp_path / "r",
            show_progress=False,
        )  # fmt: skip


def test_the_capability_check_asks_for_the_compute_dtype(monkeypatch) -> None:
    monkeypatch.setenv("TRITON_INTERPRET", "1")  # attention.triton on CPU: no bf16
    system = reset()
    parts = dict(
        attention=nima.get("attention", "triton")(), positional=nima.get("positional", "rope")
    )
    model = nima.get("model", "gpt")(vocab_size=VOCAB, context_length=8, d_model=16, n_layers=1,
                                     n_heads=2, **parts)  # fmt: skip
    check_model_plugins(model, system, torch.device("cpu"), "fp32")
    with pytest.raises(CapabilityError, match="bfloat16"):
        check_model_plugins(model, system, torch.device("cpu"), "bf16")


def gpt():
    parts = dict(attention=nima.get("attention", "sdpa")(), positional=nima.get("positional", "rope"))
    return nima.get("model", "gpt")(vocab_size=VOCAB, context_length=8, d_model=16, n_layers=1,
                                    n_heads=2, **parts)  # fmt: skip


@pytest.mark.parametrize("machine", ["x86_64", "aarch64"])
@pytest.mark.parametrize("native", [True, False])
def test_bf16_on_a_cpu_without_bf16_dot_products_is_warned(monkeypatch, capsys, native, machine):
    """On x86 torch says whether the CPU has AVX512-BF16 or AMX; elsewhere it cannot tell, and
    nothing is claimed."""
    monkeypatch.setattr(trainer_module.platform, "machine", lambda: machine)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: native)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    check_model_plugins(gpt(), reset(), torch.device("cpu"), "bf16")
    warned = "without bf16 dot products" in capsys.readouterr().err
    assert warned == (machine == "x86_64" and not native)
    check_model_plugins(gpt(), reset(), torch.device("cpu"), "fp32")
    assert "bf16" not in capsys.readouterr().err


@pytest.mark.parametrize(("machine", "native", "expected"), [
    ("x86_64", True, "bf16"), ("x86_64", False, "fp32"), ("aarch64", True, "fp32"),
])  # fmt: skip
def test_auto_precision_is_bf16_only_where_the_cpu_computes_it(
    monkeypatch, machine, native, expected
) -> None:
    monkeypatch.setattr(trainer_module.platform, "machine", lambda: machine)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: native)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) == expected
    assert [resolve_precision(p, cpu) for p in ("fp32", "bf16")] == ["fp32", "bf16"]


def test_an_auto_run_records_and_trains_in_the_resolved_precision(monkeypatch, tmp_path) -> None:
    """gpt.gin's settings on the smoke model: bf16 autocast (as 'auto' resolves on a CPU with
    bf16 dot products), fp32 attention, interleaved RoPE."""
    monkeypatch.setattr(trainer_module, "cpu_bf16_dot_products", lambda: True)
    bindings = ["train.precision = 'auto'", "sdpa.fp32 = 'cpu'", "rope.layout = 'interleaved'",
                "train.steps = 6", "train.eval_interval = 3", "train.sample_tokens = 0"]  # fmt: skip
    summary = run_experiment(
        [SMOKE], bindings, reset(), run_dir=tmp_path / "r", show_progress=False
    )
    run = json.loads((tmp_path / "r" / "run.json").read_text())
    assert run["precision"] == "bf16"
    assert math.isfinite(summary["final_val_loss"])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fp16_on_cuda_scales_the_loss_and_counts_skipped_steps() -> None:
    trainer = make_trainer(optimizer="adamw", lr=1e-2, precision="fp16", batch_size=4)
    trainer.model.cuda()
    trainer.device = torch.device("cuda")
    trainer.optimizer = nima.get("optimizer", "adamw")(trainer.model, lr=1e-2)
    trainer.scaler = torch.amp.GradScaler("cuda", init_scale=2.0**40)  # overflows at first
    losses = []
    for _ in range(40):
        batches = [(x.cuda(), y.cuda()) for x, y in trainer.train_batches.next_step()]
        losses.append(trainer.train_step(batches)[0])
    assert trainer.skipped_steps >= 1 and losses[-1] < losses[0]


def test_the_final_evaluation_covers_val_and_test_with_perplexity_and_bits(tmp_path) -> None:
    import math

    bindings = ["train.dataset = @dataset.techqa()", "train.steps = 3", "train.final_eval = 'full'",
                "train.sample_tokens = 0", "train.sample_prompt = 'The'"]  # fmt: skip
    summary = run_experiment([SMOKE], bindings, reset(), run_dir=tmp_path / "r", show_progress=False)
    assert summary["final_val_perplexity"] == pytest.approx(math.exp(summary["final_val_loss"]))
    assert summary["test_perplexity"] == pytest.approx(math.exp(summary["test_loss"]))
    assert summary["test_loss"] != summary["final_val_loss"]  # another split
    for split in ("val", "test"):  # nats per token -> bits per character of that split
        assert 0 < summary[f"{split}_bits_per_char"] < summary[f"{'final_val' if split == 'val' else 'test'}_loss"] * 2

    shakespeare_like = ["train.dataset = @dataset.techqa()", "techqa.fractions = (0.9, 0.1)"]
    summary = run_experiment([SMOKE], [*bindings, *shakespeare_like], reset(),
                             run_dir=tmp_path / "no-test", show_progress=False)  # fmt: skip
    assert "test_loss" not in summary and "final_val_loss" in summary
