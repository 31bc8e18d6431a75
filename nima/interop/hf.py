"""Hugging Face GPT-2 interop: a NIMA GPT run <-> a transformers GPT2LMHeadModel directory.

    nima export RUN_DIR --format hf OUT_DIR    config.json, model.safetensors (+ tokenizer files)
    nima import HF_DIR --run-dir RUN_DIR       a NIMA run directory: `nima generate` samples it,
                                               `nima run RUN_DIR/config.gin FINETUNE.gin` trains on

GPT-2's architecture in NIMA's terms: positional.learned, norm.layernorm, mlp.gelu (exact erf:
HF "gelu"; gelu.approximate = 'tanh': HF "gelu_new", what OpenAI's weights use), multi-head
attention (n_kv_heads = n_heads) through a plugin that computes plain softmax attention
(reference, sdpa, triton), pre-norm blocks, 1/sqrt(head_dim) scaling. A run built otherwise is
refused, naming the plugin or setting that differs.

Weights: HF's GPT-2 stores its projections as Conv1D, (in, out): the transpose of nn.Linear's
(out, in). NIMA's fused qkv projection has q, k, v in HF's c_attn order, heads contiguous. GPT-2
has a bias in every projection and norm; a NIMA run with `bias = False` is exported with those
biases zero, which computes exactly the same function (and fine-tuning in transformers would then
train them from zero). The head is tied unless the run untied it (tie_word_embeddings false).

Nothing is unpickled and nothing is downloaded: safetensors and JSON only. transformers itself is
not needed here (only the tests import it, to load what this writes).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from nima import atomic
from nima.errors import CheckpointError, ConfigError, NimaError

EXACT_ATTENTION = ("reference", "sdpa", "triton")  # plain softmax(q k^T / sqrt(d)) v


class NotGPT2Error(NimaError, ValueError):
    """A run whose architecture is not GPT-2's, or a GPT-2 directory NIMA cannot represent."""


# --- NIMA -> Hugging Face ---------------------------------------------------------------------


def _name(registries: Any, family: str, instance: Any) -> str:
    entry = registries[family].find(instance)
    return entry.name if entry is not None else type(instance).__name__


def gpt2_config(model: torch.nn.Module, registries: Any) -> dict[str, Any]:
    """The config.json of `model` as a Hugging Face GPT-2, or a NotGPT2Error naming what differs."""
    refuse = "is refused: Hugging Face's GPT-2 has"
    if _name(registries, "model", model) != "gpt":
        raise NotGPT2Error(f"model {type(model).__name__} {refuse} GPT's decoder-only layout.")
    found = {"positional": set(), "norm": set(), "mlp": set(), "attention": set()}
    for family, instance in model.plugins():
        found[family].add(_name(registries, family, instance))
    want = {"positional": {"learned"}, "norm": {"layernorm"}, "mlp": {"gelu"}}
    for family, names in want.items():
        if found[family] != names:
            other = sorted(found[family] - names)
            raise NotGPT2Error(
                f"{family}.{', '.join(other)} {refuse} {family}.{next(iter(names))} only "
                f"(learned positions, LayerNorm, GELU MLP). Export a run trained with "
                f"GPT.positional = @positional.learned, GPT.norm = @norm.layernorm and "
                f"GPT.mlp = @mlp.gelu."
            )
    if other := sorted(found["attention"] - set(EXACT_ATTENTION)):
        raise NotGPT2Error(
            f"attention.{', '.join(other)} {refuse} plain softmax attention, which "
            f"attention.{', attention.'.join(EXACT_ATTENTION)} compute; a plugin that changes the "
            f"scores would give other logits there."
        )
    block = model.blocks[0]
    if model.n_kv_heads != block.attn.n_heads:
        raise NotGPT2Error(
            f"n_kv_heads={model.n_kv_heads} (grouped-query attention) {refuse} one key/value "
            f"head per query head (n_kv_heads = n_heads = {block.attn.n_heads})."
        )
    approximate = {b.mlp.approximate for b in model.blocks}
    eps = {m.eps for family, m in model.plugins() if family == "norm"}
    if len(approximate) != 1 or len(eps) != 1:
        raise NotGPT2Error(f"layers with different GELUs or norm eps {refuse} one of each.")
    d_model = model.token_embedding.weight.shape[1]
    tied = model.lm_head.weight is model.token_embedding.weight
    dropout = model.dropout.p
    dtype = str(model.token_embedding.weight.dtype).removeprefix("torch.")
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": model.vocab_size,
        "n_positions": model.context_length,
        "n_embd": d_model,
        "n_layer": len(model.blocks),
        "n_head": block.attn.n_heads,
        "n_inner": block.mlp.proj.in_features,
        "activation_function": "gelu_new" if approximate == {"tanh"} else "gelu",
        "layer_norm_epsilon": eps.pop(),
        "resid_pdrop": dropout,
        "embd_pdrop": dropout,
        "attn_pdrop": 0.0,  # NIMA's attention has no dropout on its probabilities
        "scale_attn_weights": True,
        "scale_attn_by_inverse_layer_idx": False,
        "reorder_and_upcast_attn": False,
        "add_cross_attention": False,
        "tie_word_embeddings": tied,
        "initializer_range": 0.02,
        "use_cache": True,
        "dtype": dtype,  # transformers >= 4.56 reads this key,
        "torch_dtype": dtype,  # older ones (pyproject allows >= 4.40) this one
    }


def _bias(linear_or_norm: torch.nn.Module, size: int) -> torch.Tensor:
    """Its bias, or zeros where the run has none (bias = False): the same function."""
    bias = getattr(linear_or_norm, "bias", None)
    weight = linear_or_norm.weight
    return bias.detach() if bias is not None else torch.zeros(size, dtype=weight.dtype)


def gpt2_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's weights under Hugging Face GPT-2's names and layouts (Conv1D: transposed)."""
    state = {
        "transformer.wte.weight": model.token_embedding.weight,
        "transformer.wpe.weight": model.positional.weight,
    }
    for i, block in enumerate(model.blocks):
        h = f"transformer.h.{i}."
        for hf, norm in (("ln_1", block.norm1), ("ln_2", block.norm2)):
            state[h + hf + ".weight"] = norm.weight
            state[h + hf + ".bias"] = _bias(norm, norm.weight.shape[0])
        for hf, linear in (
            ("attn.c_attn", block.attn.qkv),
            ("attn.c_proj", block.attn.proj),
            ("mlp.c_fc", block.mlp.fc),
            ("mlp.c_proj", block.mlp.proj),
        ):
            state[h + hf + ".weight"] = linear.weight.t()  # (in, out): Conv1D
            state[h + hf + ".bias"] = _bias(linear, linear.out_features)
    state["transformer.ln_f.weight"] = model.norm.weight
    state["transformer.ln_f.bias"] = _bias(model.norm, model.norm.weight.shape[0])
    if model.lm_head.weight is not model.token_embedding.weight:
        state["lm_head.weight"] = model.lm_head.weight
    return {k: v.detach().cpu().contiguous() for k, v in state.items()}


def tokenizer_files(tokenizer: Any, config: dict[str, Any]) -> dict[str, Any]:
    """tokenizer.json and tokenizer_config.json for a byte-level BPE tokenizer, else nothing
    (Hugging Face has no format for NIMA's char and word tokenizers)."""
    if not hasattr(tokenizer, "to_huggingface"):
        return {}
    special = {
        f"{role}_token": tokenizer.roles[name]
        for role, name in (("bos", "sos"), ("eos", "eos"), ("pad", "pad"), ("unk", "unk"))
        if tokenizer.roles[name] is not None
    }
    return {
        "tokenizer.json": tokenizer.to_huggingface(),
        "tokenizer_config.json": {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "model_max_length": config["n_positions"],
            **special,
        },
    }


def export_hf(
    run_dir: str | Path, out_dir: str | Path, system: Any, checkpoint: str = "best"
) -> list[str]:
    """Write the run's `checkpoint` as a Hugging Face GPT-2 directory (all files or none);
    returns the files written."""
    from nima.runs import load_run

    out_dir = Path(out_dir)
    if out_dir.exists():
        raise ConfigError(f"{out_dir} already exists; export writes a new folder (give another).")
    run = load_run(run_dir, system, torch.device("cpu"), checkpoint)
    config = gpt2_config(run.model, system.registries)
    for role, hf in (("sos", "bos_token_id"), ("eos", "eos_token_id"), ("pad", "pad_token_id")):
        config[hf] = getattr(run.tokenizer, f"{role}_id")
    files = tokenizer_files(run.tokenizer, config)
    with atomic.atomic_dir(out_dir) as tmp:
        (tmp / "config.json").write_text(atomic.strict_json(config, indent=2))
        save_file(gpt2_state(run.model), tmp / "model.safetensors", metadata={"format": "pt"})
        for name, data in files.items():
            (tmp / name).write_text(json.dumps(data, ensure_ascii=False, indent=1))
    return ["config.json", "model.safetensors", *files]


# --- Hugging Face -> NIMA ---------------------------------------------------------------------

ACTIVATIONS = {"gelu": "none", "gelu_new": "tanh", "gelu_pytorch_tanh": "tanh"}


def read_gpt2_config(hf_dir: Path) -> dict[str, Any]:
    """config.json of a Hugging Face GPT-2 directory, checked for what NIMA's GPT can be."""
    path = hf_dir / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(
            f"{hf_dir} has no config.json: give a Hugging Face model directory (config.json, "
            f"model.safetensors, tokenizer.json), e.g. one written by save_pretrained."
        ) from None
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path} cannot be read as JSON: {exc}") from None
    if not isinstance(config, dict) or config.get("model_type") != "gpt2":
        got = config.get("model_type") if isinstance(config, dict) else None
        raise NotGPT2Error(f"{path} describes model_type {got!r}; NIMA imports 'gpt2' only.")
    act = config.get("activation_function", "gelu_new")
    checks = [
        (act in ACTIVATIONS, f"activation_function {act!r} (NIMA has {', '.join(ACTIVATIONS)})"),
        (config.get("scale_attn_weights", True), "scale_attn_weights false"),
        (not config.get("scale_attn_by_inverse_layer_idx"), "scale_attn_by_inverse_layer_idx"),
        (not config.get("add_cross_attention"), "add_cross_attention"),
    ]
    for ok, what in checks:
        if not ok:
            raise NotGPT2Error(f"{path} sets {what}, which NIMA's GPT does not have.")
    n_embd = config.get("n_embd", 768)
    n_inner = config.get("n_inner") or 4 * n_embd
    if int(n_inner / n_embd * n_embd) != n_inner:
        raise NotGPT2Error(f"{path}: n_inner={n_inner} is not a multiple NIMA's mlp_ratio gives.")
    return config


def nima_state(hf: dict[str, torch.Tensor], n_layers: int, tied: bool) -> dict[str, torch.Tensor]:
    """Hugging Face GPT-2 weights under NIMA GPT's names and layouts (the inverse of gpt2_state)."""
    hf = {k.removeprefix("transformer."): v for k, v in hf.items()}
    state = {"token_embedding.weight": hf["wte.weight"], "positional.weight": hf["wpe.weight"]}
    for i in range(n_layers):
        h, b = f"h.{i}.", f"blocks.{i}."
        for hf_name, name in (("ln_1", "norm1"), ("ln_2", "norm2")):
            state[f"{b}{name}.weight"] = hf[f"{h}{hf_name}.weight"]
            state[f"{b}{name}.bias"] = hf[f"{h}{hf_name}.bias"]
        for hf_name, name in (
            ("attn.c_attn", "attn.qkv"),
            ("attn.c_proj", "attn.proj"),
            ("mlp.c_fc", "mlp.fc"),
            ("mlp.c_proj", "mlp.proj"),
        ):
            state[f"{b}{name}.weight"] = hf[f"{h}{hf_name}.weight"].t().contiguous()
            state[f"{b}{name}.bias"] = hf[f"{h}{hf_name}.bias"]
    state["norm.weight"], state["norm.bias"] = hf["ln_f.weight"], hf["ln_f.bias"]
    state["lm_head.weight"] = hf["wte.weight"] if tied else hf["lm_head.weight"]
    return state


def gin_config(config: dict[str, Any], run_dir: Path, source: Path) -> str:
    """The imported run's config.gin: the model and tokenizer (a fine-tuning config adds the
    dataset, optimizer and schedule; train.init_from starts it from the imported weights)."""
    n_embd = config.get("n_embd", 768)
    n_inner = config.get("n_inner") or 4 * n_embd
    approximate = ACTIVATIONS[config.get("activation_function", "gelu_new")]
    return f"""# A Hugging Face GPT-2 imported by `nima import` from {source}.
# Sample it:    nima generate {run_dir}
# Fine-tune it: nima run {run_dir}/config.gin experiments/finetune.gin

train.model = @GPT
train.tokenizer = @tokenizer.file()
tokenizer.file.path = "{run_dir / "tokenizer.json"}"
train.init_from = "{run_dir}"

GPT.context_length = {config.get("n_positions", 1024)}
GPT.d_model = {n_embd}
GPT.n_layers = {config.get("n_layer", 12)}
GPT.n_heads = {config.get("n_head", 12)}
GPT.mlp_ratio = {n_inner / n_embd!r}
GPT.dropout = {float(config.get("resid_pdrop", 0.1))!r}
GPT.bias = True
GPT.tie_embeddings = {bool(config.get("tie_word_embeddings", True))}
GPT.attention = @attention.sdpa()
GPT.positional = @positional.learned
GPT.norm = @norm.layernorm
GPT.mlp = @mlp.gelu
norm.layernorm.eps = {float(config.get("layer_norm_epsilon", 1e-5))!r}
mlp.gelu.approximate = "{approximate}"
"""


def import_hf(hf_dir: str | Path, run_dir: str | Path, system: Any) -> Path:
    """Make a Hugging Face GPT-2 directory a NIMA run directory (all files or none): config.gin,
    tokenizer.json, run.json and checkpoints/best.safetensors (step 0)."""
    from nima.runs import save_checkpoint

    hf_dir, run_dir = Path(hf_dir), Path(run_dir).resolve()
    if run_dir.exists():
        raise ConfigError(f"{run_dir} already exists; import writes a new run directory.")
    config = read_gpt2_config(hf_dir)
    weights = hf_dir / "model.safetensors"
    if not weights.is_file():
        raise CheckpointError(
            f"{hf_dir} has no model.safetensors (NIMA unpickles nothing, so a pytorch_model.bin "
            f"is not read): save the model with save_pretrained(..., safe_serialization=True)."
        )
    if not (hf_dir / "tokenizer.json").is_file():
        others = sorted(p.name for p in hf_dir.glob("*") if "vocab" in p.name or "merges" in p.name)
        raise CheckpointError(
            f"{hf_dir} has no tokenizer.json"
            + (f" (it has {', '.join(others)})" if others else "")
            + ": NIMA reads the tokenizer from a Hugging Face fast tokenizer's tokenizer.json. "
            "Write one next to the model, e.g. GPT2TokenizerFast.from_pretrained(DIR)"
            ".save_pretrained(DIR) (it converts vocab.json and merges.txt)."
        )
    tokenizer = system.registries["tokenizer"].get("file")(str(hf_dir / "tokenizer.json"))
    if tokenizer.vocab_size != config.get("vocab_size"):
        raise NotGPT2Error(
            f"{hf_dir}: the tokenizer has {tokenizer.vocab_size} tokens and the model "
            f"{config.get('vocab_size')} embeddings; NIMA sizes the model by its tokenizer."
        )
    with safe_open(weights, framework="pt") as f:
        hf = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
    tied = bool(config.get("tie_word_embeddings", True))
    try:
        state = nima_state(hf, config.get("n_layer", 12), tied)
    except KeyError as exc:
        raise CheckpointError(f"{weights} lacks the GPT-2 tensor {exc}.") from None
    model = build_gpt2(config, tokenizer.vocab_size, system.registries)
    missing = set(model.state_dict()) - set(state)
    if missing:
        raise CheckpointError(f"{weights}: no weights for {sorted(missing)[:3]}")
    model.load_state_dict(state, strict=True)
    with atomic.atomic_dir(run_dir) as tmp:
        (tmp / "config.gin").write_text(gin_config(config, run_dir, hf_dir.resolve()))
        tokenizer.save(tmp / "tokenizer.json")
        meta = {"step": 0, "val_loss": None, "vocab_size": tokenizer.vocab_size,
                "imported_from": str(hf_dir.resolve())}  # fmt: skip
        (tmp / "checkpoints").mkdir()
        save_checkpoint(model, tmp / "checkpoints" / "best.safetensors", meta)
        run = {"imported_from": str(hf_dir.resolve()), "hf_config": config}
        (tmp / "run.json").write_text(atomic.strict_json(run, indent=2))
    return run_dir


def build_gpt2(config: dict[str, Any], vocab_size: int, registries: Any) -> torch.nn.Module:
    """NIMA's GPT with the architecture `config` describes (what config.gin binds)."""
    n_embd = config.get("n_embd", 768)
    norm, mlp = registries["norm"].get("layernorm"), registries["mlp"].get("gelu")
    approximate = ACTIVATIONS[config.get("activation_function", "gelu_new")]
    eps = float(config.get("layer_norm_epsilon", 1e-5))
    return registries["model"].get("gpt")(
        vocab_size=vocab_size,
        context_length=config.get("n_positions", 1024),
        d_model=n_embd,
        n_layers=config.get("n_layer", 12),
        n_heads=config.get("n_head", 12),
        mlp_ratio=(config.get("n_inner") or 4 * n_embd) / n_embd,
        dropout=float(config.get("resid_pdrop", 0.1)),
        bias=True,
        tie_embeddings=bool(config.get("tie_word_embeddings", True)),
        attention=registries["attention"].get("sdpa")(),
        positional=registries["positional"].get("learned"),
        norm=functools.partial(norm, eps=eps),
        mlp=functools.partial(mlp, approximate=approximate),
    )
