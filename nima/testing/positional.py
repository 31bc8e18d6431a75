"""Conformance checks for positional plugins: RoPE parity with the family's `rope` reference,
and the properties of a relative attention bias (ALiBi and its kin).

    from nima.testing.positional import check_relative_bias, check_rope_parity
    errors = check_rope_parity(my_rope.rotate, head_dim=my_rope.head_dim)
    worst = check_relative_bias(my_alibi.bias, n_heads=my_alibi.n_heads)

The reference is whatever is registered as `positional.rope` (looked up through the registry, so
the core imports no plugin by name). Each case checks values and gradients of q and k, with GQA
head counts, odd lengths, strided inputs, decode offsets, per-batch (packed) positions and
positions beyond the cached table, and that the caller's tensors are left untouched.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

RotateFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]

# Both sides compute in fp32 and cast back, so low precision differs by about one output ulp.
TOLERANCES = {  # dtype: (atol, rtol)
    torch.float32: (1e-5, 1e-5),
    torch.float16: (2e-3, 2e-3),
    torch.bfloat16: (1.6e-2, 1.6e-2),
}


@dataclass(frozen=True)
class RopeCase:
    """One parity case: q (B, H, N, D), k (B, Hkv, N, D) at positions of a given kind."""

    batch: int
    heads: int
    kv_heads: int
    length: int
    positions: str  # "arange" | "offset" (decoding at a KV-cache offset) | "per_batch" (packed)
    offset: int = 0
    strided: bool = False  # q and k as (B, N, H, D) storage viewed as (B, H, N, D)


DEFAULT_CASES = (
    RopeCase(1, 1, 1, 1, "arange"),
    RopeCase(2, 4, 4, 16, "arange"),
    RopeCase(2, 6, 2, 33, "offset", offset=57, strided=True),
    RopeCase(1, 3, 1, 1, "offset", offset=1000),  # one-token decode
    RopeCase(3, 5, 5, 7, "per_batch", strided=True),
    RopeCase(2, 7, 1, 13, "offset", offset=5000),  # beyond any small cache: computed on the fly
)


def make_positions(case: RopeCase, generator: torch.Generator) -> torch.Tensor:
    """Positions (N,) for "arange"/"offset", (B, N) restarting at random points for "per_batch"."""
    if case.positions == "per_batch":
        starts = torch.randint(0, 64, (case.batch, 1), generator=generator)
        return starts + torch.arange(case.length)  # (B, N)
    return case.offset + torch.arange(case.length)  # (N,)


def make_qk(
    case: RopeCase,
    head_dim: int,
    dtype: torch.dtype,
    device: str | torch.device,
    generator: torch.Generator,
    grad: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random q (B, H, N, D) and k (B, Hkv, N, D), drawn on the CPU: same values on any device."""

    def rand(heads: int) -> torch.Tensor:
        B, N, D = case.batch, case.length, head_dim
        if case.strided:  # (B, N, heads, D) storage, as after a fused qkv projection
            x = torch.randn(B, N, heads, D, generator=generator).transpose(1, 2)
        else:
            x = torch.randn(B, heads, N, D, generator=generator)
        return x.to(device=device, dtype=dtype).requires_grad_(grad)

    return rand(case.heads), rand(case.kv_heads)


def _max_errors(out: torch.Tensor, ref: torch.Tensor) -> tuple[float, float]:
    """Max abs error and max abs error relative to the reference's largest magnitude."""
    diff = (out.float() - ref.float()).abs().max().item()
    return diff, diff / max(ref.float().abs().max().item(), 1e-30)


def check_rope_parity(
    rotate_fn: RotateFn,
    *,
    head_dim: int = 16,
    base: float = 10000.0,
    max_len: int = 64,
    cases: tuple[RopeCase, ...] = DEFAULT_CASES,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    atol: float | None = None,
    rtol: float | None = None,
    grad: bool = True,
    reference: RotateFn | None = None,
    seed: int = 0,
) -> dict[str, float]:
    """Compare `rotate_fn(q, k, positions)` with the reference RoPE; raise AssertionError on a miss.

    The reference defaults to the registered `positional.rope` with the same head_dim, base and
    max_len, fed the same inputs. Returns the worst absolute and relative errors seen.
    """
    if reference is None:
        import nima

        rope = nima.get("positional", "rope")(head_dim=head_dim, max_len=max_len, base=base)
        reference = rope.to(device).rotate
    atol = TOLERANCES[dtype][0] if atol is None else atol
    rtol = TOLERANCES[dtype][1] if rtol is None else rtol
    worst = {"max_abs": 0.0, "max_rel": 0.0}
    for i, case in enumerate(cases):
        g = torch.Generator().manual_seed(seed + i)
        label = f"case {case} (seed {seed + i}, dtype {dtype})"
        q, k = make_qk(case, head_dim, dtype, device, g, grad)
        positions = make_positions(case, g).to(device)
        q_before, k_before = q.detach().clone(), k.detach().clone()
        out = rotate_fn(q, k, positions)
        ref = reference(q, k, positions)
        assert torch.equal(q.detach(), q_before) and torch.equal(k.detach(), k_before), (
            f"{label}: the implementation wrote into its input q or k"
        )
        pairs = list(zip(("q", "k"), out, ref, strict=True))
        if grad:
            upstream = [
                torch.randn(t.shape, generator=g).to(device=device, dtype=dtype) for t in ref
            ]
            got = torch.autograd.grad(out, (q, k), upstream)
            want = torch.autograd.grad(ref, (q, k), upstream)
            pairs += list(zip(("dq", "dk"), got, want, strict=True))
        for name, a, b in pairs:
            where = f"{label}, {name}"
            assert a.shape == b.shape and a.dtype == b.dtype, (
                f"{where}: got {a.dtype} {tuple(a.shape)}, expected {b.dtype} {tuple(b.shape)}"
            )
            abs_err, rel_err = _max_errors(a, b)
            worst["max_abs"] = max(worst["max_abs"], abs_err)
            worst["max_rel"] = max(worst["max_rel"], rel_err)
            torch.testing.assert_close(
                a, b, atol=atol, rtol=rtol, msg=lambda m, where=where: f"{where}: {m}"
            )
    return worst


# (query positions, key positions) kinds for a relative bias: no cache, a cache (Nk > Nq, the
# queries last), one-token decode, per-batch (packed / left-padded) positions.
BIAS_POSITIONS = ("same", "cached", "decode", "per_batch")


def _bias_positions(kind: str, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    if kind == "same":
        positions = torch.arange(13)
        return positions, positions
    if kind == "cached":
        return torch.arange(20, 29), torch.arange(29)  # 9 new queries after 20 cached keys
    if kind == "decode":
        return torch.tensor([40]), torch.arange(41)
    starts = torch.randint(0, 30, (3, 1), generator=generator)
    return starts + torch.arange(7), starts + torch.arange(11) - 4


def check_relative_bias(
    bias_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    *,
    n_heads: int,
    shifts: tuple[int, ...] = (1, 17, 1000, 100_000),
    atol: float = 0.0,
    device: str | torch.device = "cpu",
    seed: int = 0,
) -> float:
    """Check a positional `bias(q_positions, k_positions)` that claims to be relative: for each
    kind of positions in BIAS_POSITIONS it is a float tensor broadcastable to (B, H, Nq, Nk),
    finite, and unchanged (within atol; exact by default) when query and key positions shift
    together, far past any trained length too. Raises AssertionError naming the case; returns
    the largest change seen under a shift."""
    g = torch.Generator().manual_seed(seed)
    worst = 0.0
    for kind in BIAS_POSITIONS:
        q_pos, k_pos = (t.to(device) for t in _bias_positions(kind, g))
        batch = q_pos.shape[0] if q_pos.dim() == 2 else 1
        want_shape = (batch, n_heads, q_pos.shape[-1], k_pos.shape[-1])
        bias = bias_fn(q_pos, k_pos)
        label = f"positions {kind!r} (q {tuple(q_pos.shape)}, k {tuple(k_pos.shape)})"
        assert bias.is_floating_point() and torch.isfinite(bias).all(), f"{label}: {bias.dtype}"
        try:
            broadcasts = torch.broadcast_shapes(bias.shape, want_shape) == want_shape
        except RuntimeError:
            broadcasts = False
        assert broadcasts, (
            f"{label}: bias of shape {tuple(bias.shape)} does not broadcast to {want_shape}"
        )
        for shift in shifts:
            moved = bias_fn(q_pos + shift, k_pos + shift)
            change = (moved.double() - bias.double()).abs().max().item()
            worst = max(worst, change)
            assert change <= atol, f"{label}, shifted by {shift}: the bias changed by {change:.3g}"
    return worst


# --- the conformance kit: relative offsets and chunked feeding, whatever point a plugin acts at -

N_HEADS, HEAD_DIM, MAX_LEN = 4, 16, 128


def build_positional(factory: Callable[..., Any], device: str) -> Any:
    """A positional plugin as a model builds it (nima.contracts.Positional)."""
    module = factory(
        d_model=N_HEADS * HEAD_DIM, n_heads=N_HEADS, head_dim=HEAD_DIM, max_len=MAX_LEN
    )
    return module.to(device)


def check_chunked(module: Any, *, device: str = "cpu", seed: int = 0, atol: float = 1e-5) -> None:
    """A sequence fed whole and fed in chunks with explicit positions (what a KV cache does)
    gives the same embeddings, rotated q and k, and attention bias, at every point."""
    g = torch.Generator().manual_seed(seed)
    B, N, d = 2, 29, N_HEADS * HEAD_DIM
    x = torch.randn(B, N, d, generator=g).to(device)
    q = torch.randn(B, N_HEADS, N, HEAD_DIM, generator=g).to(device)
    k = torch.randn(B, N_HEADS, N, HEAD_DIM, generator=g).to(device)
    positions = torch.arange(N, device=device)
    with torch.no_grad():
        whole = module.prepare(positions)
        x_all, (q_all, k_all) = module.embed(x, whole), module.rotate(q, k, whole)
        bias_all = module.bias(positions, positions)
        for start, stop in ((0, 11), (11, 12), (12, 29)):  # a prefill, one decode step, the rest
            part = module.prepare(positions[start:stop])
            pairs = [
                ("embed", module.embed(x[:, start:stop], part), x_all[:, start:stop]),
                *zip(
                    ("rotate q", "rotate k"),
                    module.rotate(q[:, :, start:stop], k[:, :, start:stop], part),
                    (q_all[:, :, start:stop], k_all[:, :, start:stop]),
                    strict=True,
                ),
            ]
            bias = module.bias(positions[start:stop], positions[:stop])  # keys: the cache
            if bias_all is not None or bias is not None:
                assert bias is not None and bias_all is not None, "bias is None in one feeding only"
                pairs.append(("bias", bias, bias_all[..., start:stop, :stop]))
            for point, got, want in pairs:
                err = (got.double() - want.double()).abs().max().item()
                assert err <= atol, (
                    f"positions {start}..{stop - 1} fed as a chunk: {point} differs from the whole "
                    f"sequence's by {err:.3g} (atol {atol:g})"
                )


def check_relative_rotation(
    module: Any, *, device: str = "cpu", seed: int = 0, shifts: tuple[int, ...] = (1, 17, 100)
) -> float:
    """Rotated q . k depends on the offset between positions only: shifting every position by
    s leaves the scores (B, H, N, N) unchanged (relative tolerance 1e-4 in float32)."""
    g = torch.Generator().manual_seed(seed)
    B, N = 2, 13
    q = torch.randn(B, N_HEADS, N, HEAD_DIM, generator=g).to(device)
    k = torch.randn(B, N_HEADS, N, HEAD_DIM, generator=g).to(device)
    positions = torch.arange(N, device=device)

    def scores(pos: torch.Tensor) -> torch.Tensor:
        rq, rk = module.rotate(q, k, module.prepare(pos))
        return rq.double() @ rk.double().transpose(-1, -2)  # (B, H, N, N)

    with torch.no_grad():
        base = scores(positions)
        worst = 0.0
        for shift in shifts:
            change = (scores(positions + shift) - base).abs().max().item() / base.abs().max().item()
            worst = max(worst, change)
            assert change <= 1e-4, (
                f"shifting every position by {shift} changed q . k by {change:.3g} (relative)"
            )
    return worst


def positional_checks(entry, device: str) -> list:
    """A positional plugin's checks: chunked == whole (any plugin), relative offsets (one that
    rotates q and k, or adds an attention bias)."""
    from nima.testing.kit import Check, device_skip, maker

    on_device, skip = device_skip(entry, device)
    acts_on = entry.capabilities.get("acts_on") or []

    def chunked():
        check_chunked(build_positional(maker(entry), device), device=device)

    def relative():
        module = build_positional(maker(entry), device)
        if "rotate" in acts_on:
            check_relative_rotation(module, device=device)
        if "bias" in acts_on:
            check_relative_bias(module.bias, n_heads=N_HEADS, device=device)

    def check(capability: str, what: str, declared: bool, run) -> Check:
        return Check("positional", entry.name, capability, what, on_device and declared, run, skip)

    return [
        check("chunked", "fed in chunks with explicit positions == fed whole", True, chunked),
        check("relative", "rotations and biases depend on position offsets only",
              "rotate" in acts_on or "bias" in acts_on, relative),
    ]  # fmt: skip
