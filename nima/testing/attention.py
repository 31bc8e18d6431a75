"""Conformance check for attention plugins: parity with the family's `reference`, in float64.

    from nima.testing.attention import check_attention_parity, random_cases
    errors = check_attention_parity(MyAttention(), dtype=torch.float32)
    errors = check_attention_parity(MyAttention(), cases=random_cases(20, seed=1))

The reference is whatever is registered as `attention.reference` (looked up through the
registry, so the core imports no plugin by name); it runs on the same inputs cast to float64.
Each case checks the output and dq/dk/dv (and the bias's gradient), that nothing is NaN, and that
a query row with no visible key gives exactly zero output and zero dq. Cases cover GQA/MQA, odd
lengths, Nq != Nk (bottom-right causal), key padding, fully masked rows, strided inputs and a
custom scale; BIAS_CASES add an additive bias of each broadcastable shape, for plugins that
declare the `bias` capability:

    errors = check_attention_parity(MyAttention(), cases=DEFAULT_CASES + BIAS_CASES)
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch

AttentionFn = Callable[..., torch.Tensor]

# Max error relative to the largest reference magnitude of each tensor, against float64. fp32
# is about 1e-6 in practice; 16-bit inputs are rounded before either side sees them, and the
# kernels round probabilities to the input dtype before P @ V, as FlashAttention does.
TOLERANCES: dict[torch.dtype, float] = {
    torch.float64: 1e-10,
    torch.float32: 2e-5,
    torch.float16: 5e-3,
    torch.bfloat16: 3e-2,
}


@dataclass(frozen=True)
class AttentionCase:
    """q (B, H, Nq, D), k and v (B, Hkv, Nk, D); padding "none" | "random" | "empty" (batch 0
    sees no key at all); strided = (B, N, H, D) storage viewed as (B, H, N, D); bias: the shape
    of an additive bias, one of BIAS_SHAPES ("none": no bias argument at all)."""

    batch: int
    heads: int
    kv_heads: int
    q_len: int
    k_len: int
    head_dim: int
    causal: bool
    padding: str = "none"
    strided: bool = False
    scale: float | None = None
    bias: str = "none"


# An additive bias broadcastable to (B, H, Nq, Nk), by the shape a caller would give it.
BIAS_SHAPES = {
    "heads": lambda B, H, Nq, Nk: (1, H, Nq, Nk),  # ALiBi without per-batch positions
    "batch": lambda B, H, Nq, Nk: (B, 1, Nq, Nk),
    "full": lambda B, H, Nq, Nk: (B, H, Nq, Nk),  # ALiBi with per-batch positions
    "plain": lambda B, H, Nq, Nk: (Nq, Nk),
}

DEFAULT_CASES: tuple[AttentionCase, ...] = (
    AttentionCase(1, 1, 1, 1, 1, 16, causal=True),  # one token
    AttentionCase(2, 4, 4, 37, 37, 32, causal=False),  # odd length, several blocks
    AttentionCase(2, 4, 2, 37, 37, 16, causal=True, strided=True),  # GQA, qkv-projection layout
    AttentionCase(1, 3, 1, 1, 45, 64, causal=True),  # MQA, one-token decode at offset 44
    AttentionCase(2, 2, 1, 19, 50, 32, causal=True, padding="random"),  # chunked prefill
    AttentionCase(1, 2, 2, 40, 17, 16, causal=True),  # Nq > Nk: the first 23 rows see no key
    AttentionCase(2, 2, 2, 33, 33, 24, causal=False, padding="empty", scale=0.3),  # D padded
    AttentionCase(2, 6, 2, 20, 29, 16, causal=False, padding="random"),
)


BIAS_CASES: tuple[AttentionCase, ...] = (
    AttentionCase(2, 4, 2, 37, 37, 16, causal=True, strided=True, bias="heads"),
    AttentionCase(1, 3, 1, 1, 45, 32, causal=True, bias="heads"),  # one-token decode
    AttentionCase(2, 2, 1, 19, 50, 32, causal=True, padding="random", bias="full"),  # prefill
    AttentionCase(1, 2, 2, 40, 17, 16, causal=True, bias="batch"),  # rows with no key
    AttentionCase(2, 2, 2, 33, 33, 24, causal=False, padding="empty", scale=0.3, bias="plain"),
    AttentionCase(2, 6, 3, 20, 29, 16, causal=False, bias="full"),
)


DEFAULT_SEED = 0


def session_seed(environ: Mapping[str, str] = os.environ) -> int:
    """The seed of random-shape cases: NIMA_TEST_SEED to explore, else a fixed one, so that a
    test run, in CI or on a laptop, draws the same shapes as the last one."""
    return int(environ.get("NIMA_TEST_SEED", DEFAULT_SEED))


def random_cases(
    count: int,
    seed: int,
    *,
    max_len: int = 80,
    head_dims: Sequence[int] = (16, 32, 64),
    bias: bool = False,
) -> list[AttentionCase]:
    """`count` random cases drawn from `seed`: shapes, GQA groups, masks, layouts, scales, and
    with bias=True an additive bias of a random shape (or none). bias=False draws the same
    cases as before the bias existed."""
    rng = random.Random(seed)
    cases = []
    for _ in range(count):
        kv_heads = rng.choice((1, 2, 3))
        q_len = rng.randint(1, max_len)
        k_len = q_len if rng.random() < 0.4 else rng.randint(1, max_len)
        cases.append(
            AttentionCase(
                batch=rng.choice((1, 2)),
                heads=kv_heads * rng.choice((1, 2, 3)),
                kv_heads=kv_heads,
                q_len=q_len,
                k_len=k_len,
                head_dim=rng.choice(tuple(head_dims)),
                causal=rng.random() < 0.6,
                padding=rng.choice(("none", "none", "random", "empty")),
                strided=rng.random() < 0.3,
                scale=rng.choice((None, None, 0.5)),
                bias=rng.choice(("none", *BIAS_SHAPES)) if bias else "none",
            )
        )
    return cases


def make_inputs(
    case: AttentionCase, dtype: torch.dtype, device: str | torch.device, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """q, k, v (leaf tensors, requires_grad) and the key padding mask, drawn on the CPU."""

    def rand(heads: int, length: int) -> torch.Tensor:
        B, D = case.batch, case.head_dim
        if case.strided:
            x = torch.randn(B, length, heads, D, generator=generator).transpose(1, 2)
        else:
            x = torch.randn(B, heads, length, D, generator=generator)
        return x.to(device=device, dtype=dtype).requires_grad_(True)

    q = rand(case.heads, case.q_len)
    k, v = rand(case.kv_heads, case.k_len), rand(case.kv_heads, case.k_len)
    mask = None
    if case.padding != "none":
        mask = torch.rand(case.batch, case.k_len, generator=generator) < 0.7  # (B, Nk)
        if case.padding == "empty":
            mask[0] = False
        mask = mask.to(device)
    return q, k, v, mask


def make_bias(
    case: AttentionCase, dtype: torch.dtype, device: str | torch.device, generator: torch.Generator
) -> torch.Tensor | None:
    """The case's additive bias (a leaf, requires_grad) of values N(0, 2^2), or None."""
    if case.bias == "none":
        return None
    shape = BIAS_SHAPES[case.bias](case.batch, case.heads, case.q_len, case.k_len)
    bias = 2 * torch.randn(shape, generator=generator)
    return bias.to(device=device, dtype=dtype).requires_grad_(True)


def _rel_error(got: torch.Tensor, want: torch.Tensor) -> float:
    """max |got - want| / max |want| (NaN if got has a NaN); absolute when want is all zero."""
    diff = (got.double() - want).abs().max().item()
    scale = want.abs().max().item()
    return diff / scale if scale > 0 else diff


def check_attention_parity(
    attn: AttentionFn,
    *,
    dtype: torch.dtype = torch.float32,
    cases: Sequence[AttentionCase] = DEFAULT_CASES,
    device: str | torch.device = "cpu",
    grad: bool = True,
    tolerance: float | None = None,
    reference: AttentionFn | None = None,
    seed: int = 0,
) -> dict[str, float]:
    """Compare `attn` with the float64 reference on each case; raise AssertionError on a miss.

    Case i is drawn from seed `seed + i`, and a failure names the case, its seed and dtype.
    `bias=` is passed only in cases that have one (BIAS_CASES, random_cases(bias=True)).
    Returns the worst relative error seen for out, dq, dk and dv (and dbias, given a bias case).
    """
    if reference is None:
        import nima

        reference = nima.get("attention", "reference")()
    tolerance = TOLERANCES[dtype] if tolerance is None else tolerance
    worst = dict.fromkeys(("out", "dq", "dk", "dv"), 0.0)
    for i, case in enumerate(cases):
        g = torch.Generator().manual_seed(seed + i)
        label = f"{case} (seed {seed + i}, {dtype}, tolerance {tolerance:g})"
        q, k, v, mask = make_inputs(case, dtype, device, g)
        bias = make_bias(case, dtype, device, g)
        inputs = (q, k, v) if bias is None else (q, k, v, bias)
        inputs64 = [t.detach().double().requires_grad_(True) for t in inputs]
        kwargs = dict(causal=case.causal, scale=case.scale, key_padding_mask=mask)
        if bias is None:  # a plugin without the bias capability need not know the argument
            out, want = attn(q, k, v, **kwargs), reference(*inputs64, **kwargs)
        else:
            out = attn(q, k, v, **kwargs, bias=bias)
            want = reference(*inputs64[:3], **kwargs, bias=inputs64[3])
        assert out.shape == want.shape and out.dtype == dtype, (
            f"{label}: got output {out.dtype} {tuple(out.shape)}, expected {dtype} "
            f"{tuple(want.shape)}"
        )
        pairs = [("out", out.detach(), want.detach())]
        if grad:
            upstream = torch.randn(want.shape, generator=g, dtype=torch.float64).to(device)
            got = torch.autograd.grad(out, inputs, upstream.to(dtype))
            ref = torch.autograd.grad(want, inputs64, upstream)
            pairs += list(zip(("dq", "dk", "dv", "dbias"), got, ref, strict=False))
        for name, a, b in pairs:
            err = _rel_error(a, b)
            worst[name] = max(worst.get(name, 0.0), err)
            assert err <= tolerance, f"{label}: {name} max relative error {err:.3g}"  # NaN fails
        # Rows with no visible key: exactly zero output and dq (contract), not merely small.
        empty = _empty_rows(case, mask, device)  # (B, 1, Nq) bool
        if empty.any():
            for name, a, _ in pairs[:2]:
                rows = a.abs().amax(dim=-1)[empty.expand(-1, case.heads, -1)]
                assert torch.all(rows == 0), f"{label}: {name} is not zero on rows with no key"
    return worst


def _empty_rows(
    case: AttentionCase, mask: torch.Tensor | None, device: str | torch.device
) -> torch.Tensor:
    """bool (B, 1, Nq): query rows that see no key (bottom-right causal and padding)."""
    i = torch.arange(case.q_len, device=device)[:, None]
    j = torch.arange(case.k_len, device=device)[None, :]
    visible = torch.ones(case.q_len, case.k_len, dtype=torch.bool, device=device)
    if case.causal:
        visible = j <= i + (case.k_len - case.q_len)
    visible = visible[None].expand(case.batch, -1, -1)  # (B, Nq, Nk)
    if mask is not None:
        visible = visible & mask[:, None, :]
    return ~visible.any(dim=-1)[:, None, :]


# --- the conformance kit: one check per property and per declared dtype ---------------------

# Each property of the contract, forward in the plugin's base dtype (float32 where declared).
# A property's cases need no other masking or scaling than its own wherever that can be: its
# cases with a causal mask or a custom scale run last, and fail only if `causal` / `scale` pass
# (else they are skipped, naming the property that fails), so that a broken mask or scale is
# reported in its own column. Each case's head dim is the declared one nearest to it.
PROPERTY_CASES: dict[str, tuple[str, tuple[AttentionCase, ...]]] = {
    "causal": (
        "query i sees keys j <= i + Nk - Nq",
        (
            AttentionCase(1, 1, 1, 1, 1, 16, causal=True),
            AttentionCase(2, 4, 4, 37, 37, 32, causal=True),
            AttentionCase(1, 2, 2, 64, 64, 16, causal=True),
            AttentionCase(1, 3, 3, 1, 45, 64, causal=True),  # one-token decode
            AttentionCase(2, 2, 2, 19, 50, 32, causal=True),  # chunked prefill
            AttentionCase(1, 2, 2, 40, 17, 16, causal=True),  # Nq > Nk: 23 rows see no key
        ),
    ),
    "scale": (
        "a custom softmax scale",
        (
            AttentionCase(2, 2, 2, 33, 33, 24, causal=False, scale=0.3),
            AttentionCase(1, 4, 4, 17, 17, 32, causal=False, scale=2.0),
        ),
    ),
    "odd_lengths": (
        "sequence lengths that fill no block",
        (
            AttentionCase(2, 4, 4, 37, 37, 32, causal=False),
            AttentionCase(1, 2, 2, 19, 19, 16, causal=False),
            AttentionCase(1, 2, 2, 53, 53, 16, causal=True),
        ),
    ),
    "gqa": (
        "grouped-query and multi-query attention (H % Hkv == 0)",
        (
            AttentionCase(1, 3, 1, 23, 23, 32, causal=False),
            AttentionCase(2, 4, 2, 37, 37, 16, causal=False, strided=True),
            AttentionCase(2, 4, 2, 37, 37, 16, causal=True, strided=True),
        ),
    ),
    "nq_ne_nk": (
        "Nq != Nk with the queries last (KV-cache decode, chunked prefill)",
        (
            AttentionCase(1, 2, 2, 20, 29, 16, causal=False),
            AttentionCase(1, 3, 3, 1, 45, 64, causal=False),
            AttentionCase(2, 2, 2, 19, 50, 32, causal=True),
        ),
    ),
    "key_padding": (
        "key_padding_mask hides keys",
        (
            AttentionCase(2, 4, 4, 20, 29, 16, causal=False, padding="random"),
            AttentionCase(2, 2, 2, 33, 33, 32, causal=False, padding="random"),
            AttentionCase(2, 2, 2, 19, 50, 32, causal=True, padding="random"),
        ),
    ),
    "masked_rows": (
        "a query with no visible key gives zeros, not NaN",
        (
            AttentionCase(2, 2, 2, 33, 33, 24, causal=False, padding="empty"),
            AttentionCase(1, 2, 2, 40, 17, 16, causal=True),
        ),
    ),
}

DTYPES = ("float32", "float64", "float16", "bfloat16")
HEAD_DIMS = (8, 24, 64, 80, 128)  # powers of two and ones that pad a block; any head dim: these
HEAD_DIM_SAMPLE = 6  # at most this many of the declared head dims are checked


def to_device(attn, device: str):
    """The plugin instance moved to `device` if it is a module (its parameters, if any); the
    contract only asks for a callable."""
    return attn.to(device) if isinstance(attn, torch.nn.Module) else attn


def masks_needed(case: AttentionCase) -> set[str]:
    """The `masks` capability values a case needs: Nq != Nk is the bottom-right case."""
    needed = set()
    if case.q_len != case.k_len:
        needed.add("causal_bottom_right")
    elif case.causal:
        needed.add("causal")
    if case.padding != "none":
        needed.add("key_padding")
    return needed


def depends_on(case: AttentionCase) -> set[str]:
    """The properties besides its own that a case exercises (whose failure would show in it)."""
    return ({"causal"} if case.causal else set()) | ({"scale"} if case.scale is not None else set())


def head_dim_sample(head_dims) -> list[int]:
    """The declared head dims the `head_dims` check runs: all of a short list; of a long one or
    a range, the smallest, the largest and evenly spread ones between."""
    if head_dims is None:
        return list(HEAD_DIMS)
    dims = sorted(set(head_dims))
    if len(dims) <= HEAD_DIM_SAMPLE:
        return dims
    step = (len(dims) - 1) / (HEAD_DIM_SAMPLE - 1)
    return sorted({dims[round(i * step)] for i in range(HEAD_DIM_SAMPLE)})


def fit(cases, head_dims, masks) -> tuple[AttentionCase, ...]:
    """The cases a plugin declaring `head_dims` and `masks` supports: each with the declared
    head dim nearest its own, those needing an undeclared mask left out."""
    from dataclasses import replace

    kept = []
    for case in cases:
        if masks is not None and not masks_needed(case) <= set(masks):
            continue
        if head_dims is not None and case.head_dim not in head_dims:
            nearest = min(head_dims, key=lambda d: (abs(d - case.head_dim), d))
            case = replace(case, head_dim=nearest)
        kept.append(case)
    return tuple(kept)


def attention_checks(entry, device: str) -> list:
    """The attention family's checks of `entry` on `device` (see nima.testing.kit)."""
    from nima.testing.kit import Check, Skip, device_skip, dtypes_on, maker

    caps = entry.capabilities
    on_device, skip = device_skip(entry, device)
    declared_dtypes = dtypes_on(entry, device, DTYPES)
    base = "float32" if "float32" in declared_dtypes else (declared_dtypes or ["float32"])[0]
    backward = bool(caps.get("backward"))
    masks, head_dims = caps.get("masks"), caps.get("head_dims")
    make = maker(entry)
    failed: dict[str, bool] = {}  # property -> whether its own forward check fails

    def compare(cases, dtype: str, grad: bool, first_seed: int = 0) -> None:
        attn = to_device(make(), device)
        reference = caps["reference"](attn) if "reference" in caps else None
        check_attention_parity(
            attn, dtype=getattr(torch, dtype), cases=cases, device=device, grad=grad,
            reference=reference, seed=first_seed,
        )  # fmt: skip

    def fails(prop: str) -> bool:
        if prop not in failed:
            try:
                compare(fit(PROPERTY_CASES[prop][1], head_dims, masks), base, False)
                failed[prop] = False
            except Skip:
                raise
            except Exception:
                failed[prop] = True
        return failed[prop]

    def parity(capability: str, cases, dtype: str, grad: bool):
        def run():
            order = sorted(range(len(cases)), key=lambda i: bool(depends_on(cases[i])))
            for i in order:  # the cases without a mask or scale first; case i keeps seed i
                try:
                    compare(cases[i : i + 1], dtype, grad, first_seed=i)
                except Skip:
                    raise
                except Exception:
                    broken = sorted(p for p in depends_on(cases[i]) - {capability} if fails(p))
                    if not broken:
                        raise
                    raise Skip(
                        f"not checked in full: its case that also uses {' and '.join(broken)} "
                        f"fails because {' and '.join(map(repr, broken))} fails on its own "
                        "(see that column)"
                    ) from None

        return run

    def check(capability: str, what: str, cases, dtype: str, grad: bool, declared=True) -> Check:
        run, why = parity(capability, cases, dtype, grad), skip
        if not cases and on_device:  # every case needs a mask the plugin does not declare
            declared, why = False, f"needs masks it does not declare (it declares {masks})"
        return Check("attention", entry.name, capability, what, on_device and declared, run, why)

    checks = []
    for name, (what, cases) in PROPERTY_CASES.items():
        checks.append(check(name, what, fit(cases, head_dims, masks), base, False))
    checks.append(
        check("backward", "dq, dk, dv match the reference", fit(DEFAULT_CASES, head_dims, masks),
              base, True, declared=backward)
    )  # fmt: skip
    checks.append(
        check("bias", "an additive bias of each broadcastable shape",
              fit(BIAS_CASES, head_dims, masks), base, backward, declared=bool(caps.get("bias")))
    )  # fmt: skip

    def deterministic():
        """Two calls on the same inputs give bitwise the same output (and gradients)."""
        case = fit(DEFAULT_CASES[1:2], head_dims, masks)[0]
        attn = to_device(make(), device)
        got = []
        for _ in range(2):
            g = torch.Generator().manual_seed(0)
            q, k, v, mask = make_inputs(case, getattr(torch, base), device, g)
            out = attn(q, k, v, causal=case.causal, scale=case.scale, key_padding_mask=mask)
            grads = torch.autograd.grad(out.sum(), (q, k, v)) if backward else ()
            got.append((out.detach(), *grads))
        for name, a, b in zip(("out", "dq", "dk", "dv"), *got, strict=False):
            assert torch.equal(a, b), f"{name} differs between two identical calls ({case})"

    checks.append(
        Check("attention", entry.name, "deterministic", "two identical calls agree bitwise",
              on_device and bool(caps.get("deterministic")), deterministic, skip)
    )  # fmt: skip
    dims = head_dim_sample(head_dims)
    dim_cases = tuple(AttentionCase(1, 2, 1, 33, 33, d, causal=False) for d in dims)
    checks.append(check("head_dims", f"head dims {', '.join(map(str, dims))}", dim_cases, base,
                        False, declared=bool(dims)))  # fmt: skip
    for dtype in DTYPES:
        tol = TOLERANCES[getattr(torch, dtype)]
        checks.append(
            check(dtype, f"parity in {dtype} (tolerance {tol:g})",
                  fit(DEFAULT_CASES[:4], head_dims, masks), dtype, backward,
                  declared=dtype in declared_dtypes)
        )  # fmt: skip
    return checks
