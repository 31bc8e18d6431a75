"""NIMA's training step vs a plain-PyTorch nanoGPT step, side by side in one process.

    python benchmarks/bench_train.py [--rounds 8] [--steps 10] [--bind 'train.threads = 1']
        [--variant 'learned=GPT.positional = @positional.learned' ...]
    pytest benchmarks/bench_train.py          # a short run of the same comparison

NIMA's side is its trainer as `nima run experiments/gpt.gin` builds it (batches, accumulation,
autocast, clipping, the non-finite guard, optimizer, scheduler and logging to metrics.jsonl:
`Trainer.advance`). "plain" is a nanoGPT step written out below at the run's numerics: learned
positions (the table nanoGPT has), pre-norm blocks, fused AdamW, the same shapes, batch,
clipping and torch.compile, the run's autocast, and attention kept in fp32 under it where the
run's `sdpa.fp32` does so. The bar: NIMA at least 1.0x "plain". "plain rope" is the same with
gpt.gin's positions instead of the table, RoPE on q and k written as Meta's LLaMA code does
(interleaved pairs, one complex multiply): the same model as NIMA's, so NIMA's own cost shows
apart from RoPE's. Where they differ from "plain", two more sides give context: "plain fp32",
no autocast (as nanoGPT's train.py on a CPU, whose `ctx` is a nullcontext there; it would also
turn fused AdamW off), and "plain bf16 attention", the run's autocast with torch's own policy
(attention in bf16). Each `--variant NAME=BINDING[; BINDING]` adds another NIMA trainer with
those bindings on top. All sides alternate in blocks of steps (interleaved, so machine load
falls on each); printed are each side's median tokens/s and the ratios of those medians; above
1.0 NIMA is faster.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

import gin
import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
GPT_GIN = ROOT / "experiments" / "gpt.gin"


def rotary(x: torch.Tensor, turn: torch.Tensor) -> torch.Tensor:
    """RoPE as Meta's LLaMA code writes it: x (B, N, H, D) as complex pairs times e^(i angle)."""
    pairs = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))
    return torch.view_as_real(pairs * turn).flatten(3).type_as(x)


class Block(nn.Module):
    def __init__(self, d: int, heads: int, fp32_attention: bool = False) -> None:
        super().__init__()
        self.heads, self.fp32_attention = heads, fp32_attention
        self.ln_1, self.ln_2 = nn.LayerNorm(d, bias=False), nn.LayerNorm(d, bias=False)
        self.c_attn, self.c_proj = nn.Linear(d, 3 * d, bias=False), nn.Linear(d, d, bias=False)
        self.c_fc, self.mlp_proj = nn.Linear(d, 4 * d, bias=False), nn.Linear(4 * d, d, bias=False)

    def forward(self, x: torch.Tensor, turn: torch.Tensor | None) -> torch.Tensor:
        B, N, D = x.shape
        q, k, v = (t.view(B, N, self.heads, -1) for t in self.c_attn(self.ln_1(x)).split(D, dim=2))
        if turn is not None:
            q, k = rotary(q, turn), rotary(k, turn)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))
        if self.fp32_attention:  # as NIMA's sdpa(fp32=True): attention in fp32 under autocast
            with torch.autocast(x.device.type, enabled=False):
                y = F.scaled_dot_product_attention(
                    q.float(), k.float(), v.float(), is_causal=True
                ).to(q.dtype)
        else:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.c_proj(y.transpose(1, 2).reshape(B, N, D))
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x))))


class NanoGPT(nn.Module):
    """nanoGPT's model: token + learned position embeddings, blocks, final norm, tied head; or,
    with rope=True, the same GPT as gpt.gin's (no position table, RoPE on q and k)."""

    def __init__(
        self, vocab: int, context: int, d: int, layers: int, heads: int, rope: bool = False,
        fp32_attention: bool = False,
    ) -> None:  # fmt: skip
        super().__init__()
        self.wte = nn.Embedding(vocab, d)
        self.wpe = None if rope else nn.Embedding(context, d)
        self.blocks = nn.ModuleList(Block(d, heads, fp32_attention) for _ in range(layers))
        self.ln_f = nn.LayerNorm(d, bias=False)
        self.lm_head = nn.Linear(d, vocab, bias=False)
        self.lm_head.weight = self.wte.weight
        for p in self.parameters():
            if p.dim() >= 2:
                nn.init.normal_(p, std=0.02)
        inv_freq = 10000.0 ** (-torch.arange(0, d // heads, 2) / (d // heads))
        angles = torch.arange(context)[:, None] * inv_freq  # (context, D/2)
        self.register_buffer("turn", torch.polar(torch.ones_like(angles), angles)[:, None])

    def forward(self, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        N = idx.size(1)
        x = self.wte(idx)
        if self.wpe is not None:
            x = x + self.wpe(torch.arange(N, device=idx.device))
        turn = None if self.wpe is not None else self.turn[:N]  # (N, 1, D/2)
        for block in self.blocks:
            x = block(x, turn)
        logits = self.lm_head(self.ln_f(x))
        return F.cross_entropy(logits.flatten(0, 1), targets.flatten())


def nima_trainer(bindings: list[str], run_dir: Path):
    """NIMA's trainer for gpt.gin, started in `run_dir`, as `nima run` builds it."""
    from nima import config
    from nima.data.tokens import prepare_tokens
    from nima.hooks import reset
    from nima.runs import configured_settings, pick_device, seed_everything
    from nima.train.metrics import MetricsFile
    from nima.train.trainer import Trainer

    system = reset()
    config.parse([GPT_GIN], bindings, system)
    settings = configured_settings()
    seed_everything(settings.seed)
    if settings.threads:
        torch.set_num_threads(settings.threads)
    device = pick_device(None)
    prepared = prepare_tokens(settings.dataset, settings.tokenizer)
    model = settings.model(vocab_size=prepared.tokenizer.vocab_size).to(device)
    trainer = Trainer(settings, model, prepared.splits, device, system, {})
    system.pm.register(MetricsFile(run_dir / "metrics.jsonl"))  # logging, as in a run
    trainer.start(run_dir)
    return trainer, prepared.splits["train"]


def plain_step_fn(
    trainer, train_ids, rope: bool = False, autocast: bool = False, fp32_attention: bool = False
):
    """A nanoGPT training step on the same shapes, batch, lr and clipping as `trainer`, under
    the run's autocast when `autocast` (else in the parameters' fp32), with attention in fp32
    under it when `fp32_attention`."""
    s, m, device = trainer.s, trainer.model, trainer.device
    context, batch = m.context_length, s.batch_size * s.accumulation_steps
    d, layers, heads = (gin.query_parameter(f"GPT.{n}") for n in ("d_model", "n_layers", "n_heads"))
    model = NanoGPT(m.vocab_size, context, d, layers, heads, rope, fp32_attention).to(device)
    lr = trainer.optimizer.param_groups[0]["lr"]
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.99), fused=True)
    forward = torch.compile(model) if s.compile else model  # as nanoGPT's compile=True
    data = torch.tensor(train_ids, dtype=torch.long)
    steps = [0]

    def step() -> None:
        ix = torch.randint(len(data) - context - 1, (batch,))
        x = torch.stack([data[i : i + context] for i in ix]).to(device)
        y = torch.stack([data[i + 1 : i + 1 + context] for i in ix]).to(device)
        with trainer.autocast() if autocast else contextlib.nullcontext():
            loss = forward(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), s.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        steps[0] += 1
        if steps[0] % s.log_interval == 0:
            loss.item()  # nanoGPT reads the loss at its log steps

    return step


def tokens_per_s(step, n: int, tokens_per_step: int, device: torch.device) -> float:
    start = time.perf_counter()
    for _ in range(n):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return n * tokens_per_step / (time.perf_counter() - start)


PLAIN = "plain"  # the bar: nanoGPT's layout at the run's numerics
PLAIN_ROPE = "plain rope"
PLAIN_FP32 = "plain fp32"
PLAIN_BF16_ATTENTION = "plain bf16 attention"


def plain_sides(trainer, train_ids) -> dict:
    """The plain steps to compare with `trainer`'s: at the run's numerics (autocast, and fp32
    attention where its sdpa.fp32 says so) with the position table and with RoPE; without
    autocast and with bf16 attention where those differ."""
    from nima_attention.sdpa import SdpaAttention

    autocast = trainer.s.precision != "fp32"
    fp32_attention = autocast and any(
        isinstance(m, SdpaAttention) and m.upcasts(trainer.device.type)
        for m in trainer.model.modules()
    )
    run = dict(autocast=autocast, fp32_attention=fp32_attention)
    sides = {
        PLAIN: plain_step_fn(trainer, train_ids, **run),
        PLAIN_ROPE: plain_step_fn(trainer, train_ids, rope=True, **run),
    }
    if autocast:
        sides[PLAIN_FP32] = plain_step_fn(trainer, train_ids)
    if fp32_attention:
        sides[PLAIN_BF16_ATTENTION] = plain_step_fn(trainer, train_ids, autocast=True)
    return sides


def compare(
    rounds: int, steps: int, bindings: list[str], variants: dict[str, list[str]] | None = None
) -> dict[str, dict[str, float]]:
    """Median tokens/s of NIMA (gpt.gin + bindings), each variant (bindings on top) and the
    plain steps, over `rounds` interleaved blocks of `steps` steps; the ratio of each to every
    plain side (`vs <side>`)."""
    variants = {"nima": [], **(variants or {})}
    with tempfile.TemporaryDirectory() as tmp:
        sides = {}
        for name, extra in variants.items():
            run_dir = Path(tmp) / name
            run_dir.mkdir()
            trainer, train_ids = nima_trainer([*bindings, *extra], run_dir)
            sides[name] = trainer.advance
            if name == "nima":
                sides.update(plain_sides(trainer, train_ids))
                tokens, device = trainer.tokens_per_step, trainer.device
        runs: dict[str, list[float]] = {name: [] for name in sides}
        for step in sides.values():  # warm-up: allocator, kernels, lazy state, compilation
            tokens_per_s(step, 3, tokens, device)
        for r in range(rounds):
            names = list(sides) if r % 2 == 0 else list(sides)[::-1]
            for name in names:
                runs[name].append(tokens_per_s(sides[name], steps, tokens, device))
    medians = {name: statistics.median(r) for name, r in runs.items()}
    plains = [name for name in medians if name.startswith(PLAIN)]
    return {
        name: {"tokens_per_s": m, "device": str(device),
               **{f"vs {p}": m / medians[p] for p in plains}}
        for name, m in medians.items()
    }  # fmt: skip


def test_nima_step_keeps_up_with_plain_pytorch() -> None:
    import os

    import pytest

    if not os.environ.get("NIMA_DATA_DIR"):
        pytest.skip("set NIMA_DATA_DIR to the folder holding tinyshakespeare.txt")
    threads = torch.get_num_threads()
    try:  # one thread: a busy shared machine stalls multi-threaded small ops unevenly
        result = compare(rounds=3, steps=3, bindings=["train.steps = 100", "train.threads = 1"])
    finally:
        torch.set_num_threads(threads)
    # a short run on a shared machine: a regression guard against the plain steps at the run's
    # numerics (not against fp32, which depends on the CPU's bf16), not the bar (run the script)
    assert min(result["nima"][f"vs {side}"] for side in (PLAIN, PLAIN_ROPE)) > 0.8, result


def variant(text: str) -> tuple[str, list[str]]:
    """`NAME=BINDING[; BINDING]` -> (NAME, [BINDING, ...])."""
    name, sep, bindings = text.partition("=")
    name = name.strip()
    if not sep or not name or name == "nima" or name.startswith(PLAIN):
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected NAME=BINDING[; BINDING], NAME not nima nor starting with plain"
        )
    return name, [b.strip() for b in bindings.split(";") if b.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--bind", action="append", default=[], help="for every NIMA side")
    parser.add_argument("--variant", action="append", default=[], type=variant)
    args = parser.parse_args()
    results = compare(args.rounds, args.steps, args.bind, dict(args.variant))
    print(f"{results[PLAIN]['device']}, gpt.gin + {args.bind or 'no bindings'}:")
    columns = [key for key in results[PLAIN] if key.startswith("vs ")]
    print(f"  {'':24s} {'tokens/s':>9s}" + "".join(f"  {c:>{max(len(c), 7)}s}" for c in columns))
    for name, r in results.items():
        ratios = "".join(f"  {r[c]:>{max(len(c), 7) - 1}.3f}x" for c in columns)
        print(f"  {name:24s} {r['tokens_per_s']:9,.0f}{ratios}")


if __name__ == "__main__":
    sys.exit(main())
