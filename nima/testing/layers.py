"""Conformance check for norm and mlp plugins: parity with a plain-torch formula, in float64.

    from nima.testing.layers import check_layer_parity, rmsnorm_reference
    errors = check_layer_parity(RMSNorm(d_model=64), rmsnorm_reference(eps=1e-6), dtype=torch.bfloat16)

A norm or MLP is a different function per plugin (layernorm is not rmsnorm), so each is checked
against the written-out formula of what it claims to compute: the references below, or one of
your own, `reference(x, params) -> y`, with `params` the layer's parameters by name. The check
gives the layer random parameters (a copy: yours are untouched; at init a norm is the identity
map of its gain 1 and bias 0, which would hide a swapped gain or bias), runs it on random inputs
of several shapes, odd lengths included, and compares the output and the gradients of the input
and of every parameter with the reference computed in float64 on the same values.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

Params = dict[str, torch.Tensor]
Reference = Callable[[torch.Tensor, Params], torch.Tensor]

# Max error relative to the largest reference magnitude of each tensor, against float64: fp32 is
# about 1e-6 in practice; 16-bit layers round their inputs, parameters and matmul outputs.
TOLERANCES: dict[torch.dtype, float] = {
    torch.float64: 1e-10,
    torch.float32: 1e-5,
    torch.float16: 5e-3,
    torch.bfloat16: 4e-2,
}

SHAPES: tuple[tuple[int, ...], ...] = ((1, 1), (2, 7), (3, 33), (1, 130))  # (B, N): odd lengths


def layernorm_reference(eps: float = 1e-5) -> Reference:
    """(x - mean) / sqrt(var + eps) * weight + bias, over the last dimension (biased var)."""

    def reference(x: torch.Tensor, p: Params) -> torch.Tensor:
        centred = x - x.mean(dim=-1, keepdim=True)
        y = centred / torch.sqrt(centred.square().mean(dim=-1, keepdim=True) + eps) * p["weight"]
        return y + p["bias"] if "bias" in p else y

    return reference


def rmsnorm_reference(eps: float = 1e-6) -> Reference:
    """x / sqrt(mean(x^2) + eps) * weight, over the last dimension."""

    def reference(x: torch.Tensor, p: Params) -> torch.Tensor:
        return x / torch.sqrt(x.square().mean(dim=-1, keepdim=True) + eps) * p["weight"]

    return reference


def _linear(x: torch.Tensor, p: Params, name: str) -> torch.Tensor:
    y = x @ p[f"{name}.weight"].T
    return y + p[f"{name}.bias"] if f"{name}.bias" in p else y


def mlp_reference(activation: str) -> Reference:
    """proj(act(fc(x))) for activation "gelu" (exact: x Phi(x), with erf), "relu2" (relu(x)^2)
    or "swiglu" (fc's first half gates: silu(a) * b, silu(a) = a * sigmoid(a))."""

    def act(h: torch.Tensor) -> torch.Tensor:
        if activation == "gelu":
            return h * 0.5 * (1 + torch.erf(h / math.sqrt(2)))
        if activation == "relu2":
            return torch.clamp(h, min=0) ** 2
        if activation == "swiglu":
            a, b = h.chunk(2, dim=-1)
            return a * torch.sigmoid(a) * b
        raise ValueError(f"unknown activation {activation!r}: gelu, relu2 or swiglu")

    def reference(x: torch.Tensor, p: Params) -> torch.Tensor:
        return _linear(act(_linear(x, p, "fc")), p, "proj")

    return reference


def _rel_error(got: torch.Tensor, want: torch.Tensor) -> float:
    diff = (got.double() - want).abs().max().item()
    scale = want.abs().max().item()
    return diff / scale if scale > 0 else diff


def check_layer_parity(
    layer: nn.Module,
    reference: Reference,
    *,
    dtype: torch.dtype = torch.float32,
    shapes: Sequence[tuple[int, ...]] = SHAPES,
    device: str | torch.device = "cpu",
    tolerance: float | None = None,
    grad: bool = True,
    seed: int = 0,
) -> dict[str, float]:
    """Compare `layer` (a norm or an MLP, (..., d_model) -> (..., d_model)) with `reference` on
    random inputs of each shape + (d_model,); raise AssertionError naming the shape, the tensor,
    the seed and the dtype on a miss. Returns the worst relative error per tensor."""
    tolerance = TOLERANCES[dtype] if tolerance is None else tolerance
    g = torch.Generator().manual_seed(seed)
    layer = copy.deepcopy(layer).to(device=device, dtype=dtype).eval()  # eval: dropout off
    with torch.no_grad():
        for p in layer.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    d_model = next(p for p in layer.parameters()).shape[-1]
    worst: dict[str, float] = {}
    for shape in shapes:
        label = f"{type(layer).__name__} on {(*shape, d_model)} (seed {seed}, {dtype})"
        x = (3 * torch.randn(*shape, d_model, generator=g) + 1).to(device=device, dtype=dtype)
        x.requires_grad_(grad)
        params = dict(layer.named_parameters())
        x64 = x.detach().double().requires_grad_(grad)
        params64 = {n: p.detach().double().requires_grad_(grad) for n, p in params.items()}
        out, want = layer(x), reference(x64, params64)
        assert out.shape == want.shape and out.dtype == dtype, (
            f"{label}: got {out.dtype} {tuple(out.shape)}, expected {dtype} {tuple(want.shape)}"
        )
        pairs = [("out", out.detach(), want.detach())]
        if grad:
            upstream = torch.randn(want.shape, generator=g, dtype=torch.float64).to(device)
            unused = dict(allow_unused=True, materialize_grads=True)  # unused: zero gradient
            got = torch.autograd.grad(out, [x, *params.values()], upstream.to(dtype), **unused)
            ref = torch.autograd.grad(want, [x64, *params64.values()], upstream, **unused)
            names = ["dx", *(f"d{n}" for n in params)]
            pairs += list(zip(names, got, ref, strict=True))
        for name, a, b in pairs:
            err = _rel_error(a, b)
            worst[name] = max(worst.get(name, 0.0), err)
            assert err <= tolerance, f"{label}: {name} max relative error {err:.3g}"  # NaN fails
    return worst


# --- the conformance kit: norm and mlp plugins against the formula they declare ---------------

REFERENCES: dict[str, Callable[[float], Reference]] = {
    "layernorm": lambda eps: layernorm_reference(eps),
    "rmsnorm": lambda eps: rmsnorm_reference(eps),
    "gelu": lambda eps: mlp_reference("gelu"),
    "swiglu": lambda eps: mlp_reference("swiglu"),
    "relu2": lambda eps: mlp_reference("relu2"),
}
DTYPES = ("float32", "float64", "float16", "bfloat16")
D_MODEL = 24


def build_layer(
    family: str, factory: Callable[..., nn.Module], d_model: int = D_MODEL
) -> nn.Module:
    """A norm or MLP instance as a model builds it (nima.contracts.Norm / MLP), with biases."""
    if family == "norm":
        return factory(d_model=d_model, bias=True)
    hidden = d_model * 5 // 3
    return factory(d_model=d_model, hidden=hidden, bias=True, dropout=0.0, residual_std=0.02)


def layer_checks(entry, device: str) -> list:
    """A norm or mlp plugin's checks: parity with its declared `formula` in each declared dtype,
    gradients (backward), and the shape contract (any plugin)."""
    from nima.testing.kit import Check, device_skip, dtypes_on, maker

    caps = entry.capabilities
    on_device, skip = device_skip(entry, device)
    formula = caps.get("formula")
    backward = bool(caps.get("backward"))
    dtypes = dtypes_on(entry, device, DTYPES)

    def parity(dtype: str, grad: bool):
        def run():
            layer = build_layer(entry.family, maker(entry))
            reference = REFERENCES[formula](getattr(layer, "eps", 1e-5))
            return check_layer_parity(
                layer, reference, dtype=getattr(torch, dtype), device=device, grad=grad
            )

        return run

    def shape():
        layer = build_layer(entry.family, maker(entry)).to(device)
        x = torch.randn(2, 7, D_MODEL, device=device)
        y = layer(x)
        assert y.shape == x.shape and y.dtype == x.dtype, (
            f"(2, 7, {D_MODEL}) float32 in, {y.dtype} {tuple(y.shape)} out"
        )
        assert torch.isfinite(y).all(), "non-finite output on a standard normal input"

    def check(capability: str, what: str, declared: bool, run) -> Check:
        return Check(entry.family, entry.name, capability, what, on_device and declared, run, skip)

    base = "float32" if "float32" in dtypes else (dtypes or ["float32"])[0]
    checks = [
        check("shape", "(..., d_model) -> (..., d_model), finite", True, shape),
        check("formula", f"matches the {formula} formula", formula is not None, parity(base, False)),
        check("backward", "input and parameter gradients match the formula's",
              backward and formula is not None, parity(base, True)),
    ]  # fmt: skip
    for dtype in DTYPES:
        tol = TOLERANCES[getattr(torch, dtype)]
        checks.append(
            check(dtype, f"parity in {dtype} (tolerance {tol:g})",
                  dtype in dtypes and formula is not None, parity(dtype, backward))
        )  # fmt: skip
    return checks
