"""Generation speed: NIMA's cached engine vs its uncached loop vs Hugging Face transformers'
GPT2LMHeadModel.generate, side by side in one process.

    pytest benchmarks/bench_generate.py --benchmark-enable   # pytest-benchmark, the issue's sizes
    python benchmarks/bench_generate.py [--rounds 5] [--threads 1] [--out FILE.json]
    python benchmarks/bench_generate.py --render FILE.json     # FILE.md again from the rows
    pytest benchmarks/bench_generate.py    # toy sizes, untimed: it runs, outputs agree

pytest-benchmark times each contender at batch 1 and 8 (groups "generate batch B"; tokens/s in
extra_info), the uncached loop over all 512 new tokens too (one round: minutes at batch 8;
NIMA_BENCH_ROUNDS sets the others' rounds, default 3). The script interleaves the contenders'
rounds instead (fairer on a noisy machine) and writes the table: JSON rows and a generated .md.

Greedy decoding of `--new` tokens after a `--prompt`-token prompt at batch 1 and 8. The models
have GPT-2's architecture (learned positions, layernorm with biases, exact GELU, SDPA attention,
tied head) at gpt.gin's shapes (d_model 128, 4 layers, 8 heads, its 65-character vocabulary) with
a 1024 context; transformers gets NIMA's random weights, so both must pick the same tokens (the
benchmark checks). transformers runs `generate(do_sample=False, use_cache=True)`, every row to
the full length. The uncached loop (the engine with use_cache=False, re-reading the whole window
each step) is timed over its first `--uncached-new` tokens (default 64) only: its cost per
token grows with the context, so this flatters it. Each round runs every contender once, in alternating order;
the table gives median tokens/s (new tokens x batch / wall time, prefill included).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import pytest
import torch

SHAPES = {"vocab_size": 65, "context_length": 1024, "d_model": 128, "n_layers": 4, "n_heads": 8}
RESULTS = Path(__file__).resolve().parent / "results" / "cpu-amd-epyc"


def nima_gpt2(shapes: dict[str, int], seed: int = 0) -> torch.nn.Module:
    """A NIMA GPT with GPT-2's architecture."""
    import nima

    torch.manual_seed(seed)
    get = nima.get
    return get("model", "gpt")(
        **shapes, bias=True, tie_embeddings=True, dropout=0.0,
        attention=get("attention", "sdpa")(), positional=get("positional", "learned"),
        norm=get("norm", "layernorm"), mlp=get("mlp", "gelu"),
    ).eval()  # fmt: skip


def hf_gpt2(model: torch.nn.Module, shapes: dict[str, int]) -> torch.nn.Module:
    """transformers' GPT2LMHeadModel holding `model`'s weights (its Conv1D stores them (in, out))."""
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=shapes["vocab_size"], n_positions=shapes["context_length"],
        n_embd=shapes["d_model"], n_layer=shapes["n_layers"], n_head=shapes["n_heads"],
        activation_function="gelu", resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        layer_norm_epsilon=1e-5, bos_token_id=None, eos_token_id=None, pad_token_id=0,
    )  # fmt: skip
    config._attn_implementation = "sdpa"
    hf = GPT2LMHeadModel(config).eval()
    nima_state = model.state_dict()
    state = {"transformer.wte.weight": nima_state["token_embedding.weight"],
             "transformer.wpe.weight": nima_state["positional.weight"],
             "transformer.ln_f.weight": nima_state["norm.weight"],
             "transformer.ln_f.bias": nima_state["norm.bias"],
             "lm_head.weight": nima_state["lm_head.weight"]}  # fmt: skip
    names = {"norm1": "ln_1", "norm2": "ln_2", "attn.qkv": "attn.c_attn", "attn.proj": "attn.c_proj",
             "mlp.fc": "mlp.c_fc", "mlp.proj": "mlp.c_proj"}  # fmt: skip
    for i in range(shapes["n_layers"]):
        for ours, theirs in names.items():
            for p in ("weight", "bias"):
                value = nima_state[f"blocks.{i}.{ours}.{p}"]
                linear = not ours.startswith("norm") and p == "weight"
                state[f"transformer.h.{i}.{theirs}.{p}"] = value.t() if linear else value
    hf.load_state_dict(state, strict=False)  # the attention mask buffers stay
    return hf


def nima_generate(model, prompts: torch.Tensor, new: int, use_cache: bool = True) -> torch.Tensor:
    import nima
    from nima.generate import Job, SamplerChain, complete

    chain = SamplerChain([nima.get("sampler", "greedy")()])
    out = complete(model, Job(prompts.tolist(), new, chain, use_cache=use_cache))
    return torch.tensor([c.ids for c in out])  # (B, new)


def hf_generate(hf, prompts: torch.Tensor, new: int) -> torch.Tensor:
    with torch.no_grad():
        out = hf.generate(
            prompts, attention_mask=torch.ones_like(prompts), max_new_tokens=new,
            min_new_tokens=new, do_sample=False, use_cache=True, pad_token_id=0,
        )  # fmt: skip
    return out[:, prompts.size(1) :]


def timed(fn, *args) -> tuple[float, torch.Tensor]:
    start = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - start, out


def compare(
    rounds: int, shapes: dict[str, int], prompt_len: int, new: int, uncached_new: int,
    batches: tuple[int, ...] = (1, 8),
) -> list[dict]:  # fmt: skip
    """Median tokens/s per (batch, contender) over interleaved rounds; outputs checked equal."""
    model = nima_gpt2(shapes)
    hf = hf_gpt2(model, shapes)
    contenders = {
        "nima cached": lambda p: nima_generate(model, p, new),
        "nima uncached": lambda p: nima_generate(model, p, uncached_new, use_cache=False),
        "transformers": lambda p: hf_generate(hf, p, new),
    }
    made = {"nima cached": new, "nima uncached": uncached_new, "transformers": new}
    rows = []
    for batch in batches:
        prompts = torch.randint(shapes["vocab_size"], (batch, prompt_len),
                                generator=torch.Generator().manual_seed(batch))  # fmt: skip
        for fn in contenders.values():  # warm-up, and the outputs must agree
            fn(prompts[:, : min(prompt_len, 8)])
        rates: dict[str, list[float]] = {name: [] for name in contenders}
        outputs = {}
        for r in range(rounds):
            order = list(contenders.items())
            for name, fn in order if r % 2 == 0 else order[::-1]:
                seconds, outputs[name] = timed(fn, prompts)
                rates[name].append(batch * made[name] / seconds)
        n = min(uncached_new, new)
        agree = {
            "transformers": bool(torch.equal(outputs["nima cached"], outputs["transformers"])),
            "nima uncached": bool(torch.equal(outputs["nima cached"][:, :n],
                                              outputs["nima uncached"][:, :n])),
        }  # fmt: skip
        medians = {name: statistics.median(v) for name, v in rates.items()}
        for name, tps in medians.items():
            rows.append({
                "batch": batch, "contender": name, "prompt": prompt_len, "new_tokens": made[name],
                "tokens_per_s": tps, "rounds": rates[name],
                "vs_transformers": tps / medians["transformers"],
                "vs_uncached": tps / medians["nima uncached"],
                "same_tokens_as_nima_cached": agree.get(name, True),
            })  # fmt: skip
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| batch | contender | new tokens | tokens/s | vs transformers | vs uncached | same tokens |",
             "|---:|---|---:|---:|---:|---:|---|"]  # fmt: skip
    for r in rows:
        lines.append(
            f"| {r['batch']} | {r['contender']} | {r['new_tokens']} | {r['tokens_per_s']:,.0f} | "
            f"{r['vs_transformers']:.2f}x | {r['vs_uncached']:.1f}x | "
            f"{'yes' if r['same_tokens_as_nima_cached'] else 'NO'} |"
        )
    return "\n".join(lines)


def report(meta: dict, rows: list[dict]) -> str:
    """The results page (.md), generated from the run's meta and rows."""
    shapes = ", ".join(f"{k} {v}" for k, v in meta["shapes"].items())
    return (
        f"# Generation: NIMA's cached engine vs its uncached loop vs transformers' generate\n\n"
        f"Generated by `{meta.get('command', 'python benchmarks/bench_generate.py')}` "
        f"({meta['time']}); do not edit by hand.\n\n"
        f"CPU {meta['cpu']}, {meta['threads']} torch thread(s), torch {meta['torch']}, "
        f"transformers {meta['transformers']}. Greedy, batch 1 and 8, a {meta['prompt']}-token "
        f"prompt; GPT-2's architecture at {shapes}. transformers: "
        f"`GPT2LMHeadModel.generate(do_sample=False, use_cache=True)` holding the same random "
        f"weights (same tokens: the last column). Median tokens/s (new tokens x batch / wall "
        f"time, prefill included) of {meta['rounds']} interleaved rounds. NIMA cached and "
        f"transformers make {meta['new']} new tokens; the uncached loop is timed over its first "
        f"{meta['uncached_new']} new tokens only, which flatters it (its cost per token grows "
        f"with the context).\n\n{table(rows)}\n\nmeta: {json.dumps(meta)}\n"
    )


# pytest-benchmark: one model pair per shape, timed per (batch, contender)
_MODELS: dict[str, tuple] = {}
CONTENDERS = ("nima cached", "nima uncached", "transformers")


@pytest.mark.parametrize("contender", CONTENDERS)
@pytest.mark.parametrize("batch", [1, 8])
def test_generate_speed(benchmark, batch: int, contender: str) -> None:
    """Tokens/s at the issue's sizes (toy sizes when benchmarks are disabled: a smoke run)."""
    pytest.importorskip("transformers")
    if benchmark.disabled:
        shapes, prompt_len, new = dict(SHAPES, context_length=32, d_model=16), 9, 6
    else:
        shapes, prompt_len, new = SHAPES, 512, 512
        torch.set_num_threads(1)
    key = json.dumps(shapes)
    if key not in _MODELS:
        model = nima_gpt2(shapes)
        _MODELS[key] = (model, hf_gpt2(model, shapes))
    model, hf = _MODELS[key]
    prompts = torch.randint(shapes["vocab_size"], (batch, prompt_len),
                            generator=torch.Generator().manual_seed(batch))  # fmt: skip
    run = {
        "nima cached": lambda: nima_generate(model, prompts, new),
        "nima uncached": lambda: nima_generate(model, prompts, new, use_cache=False),
        "transformers": lambda: hf_generate(hf, prompts, new),
    }[contender]
    benchmark.group = f"generate batch {batch}: {prompt_len}-token prompt, {new} new tokens"
    rounds = 1 if contender == "nima uncached" else int(os.environ.get("NIMA_BENCH_ROUNDS", 3))
    out = benchmark.pedantic(run, rounds=rounds, iterations=1, warmup_rounds=0)
    assert out.shape == (batch, new)
    if not benchmark.disabled:
        benchmark.extra_info["tokens_per_s"] = batch * new / benchmark.stats.stats.median


def test_generate_benchmark_runs_and_agrees_with_transformers() -> None:
    """Toy size, untimed: every contender runs and all pick the same greedy tokens."""
    pytest.importorskip("transformers")
    shapes = {"vocab_size": 65, "context_length": 32, "d_model": 16, "n_layers": 2, "n_heads": 2}
    rows = compare(1, shapes, prompt_len=9, new=12, uncached_new=12, batches=(1, 3))
    assert len(rows) == 6 and all(r["same_tokens_as_nima_cached"] for r in rows), rows
    assert all(r["tokens_per_s"] > 0 for r in rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--prompt", type=int, default=512)
    parser.add_argument("--new", type=int, default=512)
    parser.add_argument("--uncached-new", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: default)")
    parser.add_argument("--out", type=Path, help="write the rows (JSON) and the report (.md)")
    parser.add_argument("--render", type=Path, metavar="FILE.json",
                        help="only write FILE.md again from the rows a run saved")  # fmt: skip
    args = parser.parse_args()
    from nima import atomic

    if args.render:
        saved = json.loads(args.render.read_text())
        atomic.write_text(args.render.with_suffix(".md"), report(saved["meta"], saved["rows"]))
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = compare(args.rounds, SHAPES, args.prompt, args.new, args.uncached_new)
    text = table(rows)
    print(text)
    if args.out:
        import transformers

        meta = {"command": " ".join(["python", *sys.argv]), "device": "cpu", "cpu": platform.processor() or platform.machine(),
                "torch": torch.__version__, "transformers": transformers.__version__,
                "threads": torch.get_num_threads(), "shapes": SHAPES, "prompt": args.prompt,
                "new": args.new, "uncached_new": args.uncached_new, "rounds": args.rounds,
                "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}  # fmt: skip
        atomic.write_json(args.out, {"meta": meta, "rows": rows})
        atomic.write_text(args.out.with_suffix(".md"), report(meta, rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
