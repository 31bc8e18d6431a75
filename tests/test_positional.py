"""Positional plugins: RoPE geometry (norms, relative offsets, decode offsets), ALiBi's bias
(slopes, relative offsets, extrapolation) and the absolute ones."""

from __future__ import annotations

import pytest
import torch
from nima_positional.alibi import ALiBi, alibi_slopes
from nima_positional.rope import RoPE, apply_rope, rope_cos_sin

import nima
from nima.errors import ConfigError
from nima.models.gpt import GPT
from nima.models.positional import Positional
from nima.testing.positional import check_relative_bias, check_rope_parity

SIZES = dict(d_model=32, n_heads=4, head_dim=8, max_len=16)


def rand(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", ["none", "learned", "sinusoidal", "rope", "rope_triton", "alibi"])
def test_each_plugin_is_selectable_through_the_registry(name):
    cls = nima.get("positional", name)
    module = cls(**SIZES)
    assert isinstance(module, Positional)
    assert nima.entry("positional", name).package == "nima"


def test_rope_triton_declares_where_it_runs():
    devices = nima.entry("positional", "rope_triton").capabilities["devices"]
    assert "cuda" in devices
    assert nima.entry("positional", "rope").capabilities["devices"] is None  # anywhere


# --- RoPE ---------------------------------------------------------------------------------


def test_rope_preserves_norms():
    rope = RoPE(head_dim=16, max_len=64)
    q, k = rand(2, 4, 50, 16, seed=1), rand(2, 2, 50, 16, seed=2)
    positions = torch.arange(50) + 7
    q_rot, k_rot = rope.rotate(q, k, positions)
    torch.testing.assert_close(q_rot.norm(dim=-1), q.norm(dim=-1))
    torch.testing.assert_close(k_rot.norm(dim=-1), k.norm(dim=-1))
    assert not torch.allclose(q_rot, q)  # it did rotate


@pytest.mark.parametrize("shift", [1, 5, 100, 1000])
def test_rope_scores_depend_only_on_relative_offset(shift):
    # q at positions pq, k at positions pk; shifting both by `shift` keeps every q.k score.
    D = 32
    q, k = rand(1, 3, 12, D, seed=3), rand(1, 3, 12, D, seed=4)
    pq = torch.randint(0, 40, (12,), generator=torch.Generator().manual_seed(5))
    pk = torch.randint(0, 40, (12,), generator=torch.Generator().manual_seed(6))

    def scores(offset: int) -> torch.Tensor:
        q_rot = apply_rope(q, *rope_cos_sin(pq + offset, D))
        k_rot = apply_rope(k, *rope_cos_sin(pk + offset, D))
        return q_rot @ k_rot.transpose(-1, -2)  # (1, 3, 12, 12)

    base = scores(0)
    # fp32 angles carry an error of about (shift * 6e-8) rad, so the tolerance grows with the shift
    torch.testing.assert_close(scores(shift), base, atol=2e-5 + shift * 5e-7, rtol=0)
    assert not torch.allclose(base, q @ k.transpose(-1, -2), atol=1e-2)  # scores did change


def test_rope_with_positions_equals_the_sliced_sequence():
    rope = RoPE(head_dim=16, max_len=32)
    q, k = rand(2, 4, 20, 16, seed=7), rand(2, 1, 20, 16, seed=8)
    q_full, k_full = rope.rotate(q, k, torch.arange(20))
    # prefill chunk and single-token decode at a KV-cache offset
    for start in (15, 19):
        q_tail, k_tail = rope.rotate(q[:, :, start:], k[:, :, start:], torch.arange(start, 20))
        torch.testing.assert_close(q_tail, q_full[:, :, start:], atol=0, rtol=0)
        torch.testing.assert_close(k_tail, k_full[:, :, start:], atol=0, rtol=0)


def test_rope_per_batch_positions_match_per_row_rope():
    # packed sequences: each row restarts its positions somewhere else
    rope = RoPE(head_dim=8, max_len=32)
    q, k = rand(3, 2, 6, 8, seed=9), rand(3, 2, 6, 8, seed=10)
    positions = torch.tensor([[0, 1, 2, 0, 1, 2], [5, 6, 7, 8, 9, 10], [0, 1, 2, 3, 0, 1]])
    q_rot, k_rot = rope.rotate(q, k, positions)
    for b in range(3):
        q_b, k_b = rope.rotate(q[b : b + 1], k[b : b + 1], positions[b])
        torch.testing.assert_close(q_rot[b : b + 1], q_b, atol=0, rtol=0)
        torch.testing.assert_close(k_rot[b : b + 1], k_b, atol=0, rtol=0)


def test_rope_angles_do_not_depend_on_max_len():
    """No table of max_len rows: any position is computed from inv_freq, the same for both."""
    short, long = RoPE(head_dim=8, max_len=4), RoPE(head_dim=8, max_len=64)
    q, k = rand(1, 2, 40, 8, seed=11), rand(1, 2, 40, 8, seed=12)
    positions = torch.arange(40) + 10
    for a, b in zip(short.rotate(q, k, positions), long.rotate(q, k, positions), strict=True):
        torch.testing.assert_close(a, b, atol=0, rtol=0)
    assert "inv_freq" in dict(short.named_buffers()) and not short.state_dict()  # not saved


def test_rope_prepare_once_then_rotate_equals_rotate_from_positions():
    rope = RoPE(head_dim=16, max_len=32)
    q, k = rand(2, 4, 9, 16, seed=16), rand(2, 2, 9, 16, seed=17)
    for positions in (torch.arange(9) + 3, torch.arange(18).view(2, 9)):
        angles = rope.prepare(positions)
        assert angles.cos.shape == (*positions.shape, 8) and angles.cos.dtype == torch.float32
        for a, b in zip(rope.rotate(q, k, angles), rope.rotate(q, k, positions), strict=True):
            torch.testing.assert_close(a, b, atol=0, rtol=0)
    with pytest.raises(ValueError, match="positions of shape"):
        rope.rotate(q, k, rope.prepare(torch.arange(8)))  # angles for 8 tokens, q has 9


def test_rope_matches_float64_math():
    # the fp32 reference against the exact rotation computed in float64
    D, base = 16, 10000.0
    x, positions = rand(2, 3, 30, D, seed=13), torch.arange(30) * 3
    angles = positions.double()[:, None] * base ** (-torch.arange(0, D, 2).double() / D)
    x1, x2 = x.double().chunk(2, -1)
    exact = torch.cat(
        (x1 * angles.cos() - x2 * angles.sin(), x2 * angles.cos() + x1 * angles.sin()), -1
    )
    torch.testing.assert_close(apply_rope(x, *rope_cos_sin(positions, D, base)).double(), exact,
                               atol=1e-5, rtol=1e-5)  # fmt: skip


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_rope_low_precision_is_fp32_math_cast_back(dtype):
    rope = RoPE(head_dim=8, max_len=16)
    q = rand(1, 2, 5, 8, seed=14).to(dtype)
    q_rot, k_rot = rope.rotate(q, q, torch.arange(5))
    assert q_rot.dtype == dtype
    q32, _ = rope.rotate(q.float(), q.float(), torch.arange(5))
    torch.testing.assert_close(q_rot, q32.to(dtype), atol=0, rtol=0)


def test_rope_keeps_fp32_angles_in_a_bf16_model():
    rope = RoPE(head_dim=64, max_len=4096)
    q = rand(1, 2, 3, 64, seed=15).to(torch.bfloat16)
    positions = torch.tensor([5, 1000, 4000])
    want, _ = rope.rotate(q, q, positions)
    rope.to(torch.bfloat16)  # casts every floating buffer; inv_freq is rebuilt in fp32
    assert rope.inv_freq.dtype == torch.float32
    torch.testing.assert_close(rope.inv_freq, RoPE(head_dim=64).inv_freq, atol=0, rtol=0)
    assert rope.prepare(positions).cos.dtype == torch.float32
    got, _ = rope.rotate(q, q, positions)
    torch.testing.assert_close(got, want, atol=0, rtol=0)


def test_rope_base_changes_the_angles():
    a, b = RoPE(head_dim=8, max_len=8), RoPE(head_dim=8, max_len=8, base=500.0)
    assert b.base == 500.0 and not torch.allclose(a.inv_freq, b.inv_freq)
    positions = torch.arange(8)
    assert not torch.allclose(a.prepare(positions).cos, b.prepare(positions).cos)


def test_rope_bad_inputs():
    with pytest.raises(ValueError, match="even head_dim"):
        RoPE(head_dim=7, max_len=8)
    rope = RoPE(head_dim=8, max_len=8)
    q = rand(2, 2, 5, 8)
    with pytest.raises(ValueError, match="positions of shape"):
        rope.rotate(q, q, torch.arange(4))
    with pytest.raises(TypeError, match="integers"):
        rope.rotate(q, q, torch.arange(5.0))


def test_parity_check_accepts_rope_and_catches_wrong_implementations():
    rope = RoPE(head_dim=16, max_len=64)
    assert check_rope_parity(rope.rotate, head_dim=16)["max_abs"] == 0.0

    def interleaved(q, k, positions):  # GPT-J layout: pairs (0, 1), (2, 3), ... instead of halves
        perm = torch.arange(16).view(2, 8).t().flatten()
        q_rot, k_rot = rope.rotate(q[..., perm], k[..., perm], positions)
        return q_rot[..., perm.argsort()], k_rot[..., perm.argsort()]

    with pytest.raises(AssertionError):
        check_rope_parity(interleaved, head_dim=16, grad=False)

    def in_place(q, k, positions):
        q_rot, k_rot = rope.rotate(q, k, positions)
        q.data.copy_(q_rot.detach())
        return q_rot, k_rot

    with pytest.raises(AssertionError, match="wrote into its input"):
        check_rope_parity(in_place, head_dim=16, grad=False)


# --- absolute embeddings --------------------------------------------------------------------


def test_learned_adds_a_trainable_embedding():
    learned = nima.get("positional", "learned")(**SIZES)
    assert learned.weight.shape == (16, 32)
    assert 0.015 < learned.weight.std().item() < 0.025  # GPT-2 init, std 0.02
    x = rand(2, 10, 32)
    out = learned.embed(x, torch.arange(10))
    assert out.shape == x.shape
    torch.testing.assert_close(out - x, learned.weight[:10].expand(2, 10, 32))
    per_batch = torch.tensor([[0, 1, 2, 3, 4, 5, 6, 7, 8, 9], [6, 7, 8, 9, 10, 11, 12, 13, 14, 15]])
    torch.testing.assert_close(learned.embed(x, per_batch)[1] - x[1], learned.weight[6:16])
    out.sum().backward()
    assert learned.weight.grad is not None and learned.weight.grad[:10].abs().sum() > 0


def test_learned_rejects_sequences_longer_than_max_len():
    """The length is checked from the shape (no sync); explicit positions are the caller's."""
    learned = nima.get("positional", "learned")(**SIZES)
    with pytest.raises(ValueError, match="max_len=16"):
        learned.embed(rand(1, 17, 32), torch.arange(17))
    with pytest.raises(ValueError, match="positions of shape"):
        learned.embed(rand(1, 4, 32), torch.arange(5))
    for beyond in (16, -1):  # out of the table: an error from torch on CPU, never a wrapped row
        with pytest.raises(IndexError):
            learned.embed(rand(1, 1, 32), torch.tensor([beyond]))


def test_sinusoidal_values_shape_and_extrapolation():
    sinusoidal = nima.get("positional", "sinusoidal")(**SIZES)
    assert not list(sinusoidal.parameters())  # fixed
    x = torch.zeros(2, 40, 32)  # longer than max_len: a fixed table extrapolates
    pe = sinusoidal.embed(x, torch.arange(40)) / (0.02 * 2**0.5)  # the raw table
    assert pe.shape == (2, 40, 32)
    torch.testing.assert_close(pe[0, 0], torch.tensor([0.0, 1.0] * 16))  # sin 0, cos 0
    assert pe[0, 3, 0].item() == pytest.approx(torch.sin(torch.tensor(3.0)).item())
    assert pe[0, 3, 1].item() == pytest.approx(torch.cos(torch.tensor(3.0)).item())
    per_batch = torch.stack([torch.arange(40), torch.arange(40) + 5])  # (B, N)
    torch.testing.assert_close(sinusoidal.embed(x, per_batch)[1, :35], pe[0, 5:] * 0.02 * 2**0.5)
    with pytest.raises(ValueError, match="even d_model"):
        nima.get("positional", "sinusoidal")(d_model=31, n_heads=1, head_dim=31, max_len=8)


@pytest.mark.parametrize("d_model", [32, 128, 768])
def test_sinusoidal_table_is_on_the_token_embeddings_scale(d_model: int):
    """The raw table (coordinates of RMS 0.71) added to N(0, 0.02) token embeddings would drown
    them 35 to 1; scaled, every position's coordinates have RMS `scale` (0.02: the embeddings'
    init std), so a position and a token carry vectors of the same norm."""
    sizes = dict(d_model=d_model, n_heads=4, head_dim=d_model // 4, max_len=16)
    sinusoidal = nima.get("positional", "sinusoidal")(**sizes)
    pe = sinusoidal.embed(torch.zeros(1, 300, d_model), torch.arange(300))[0]  # (N, d_model)
    rms = pe.square().mean(dim=-1).sqrt()  # per position
    torch.testing.assert_close(rms, torch.full((300,), 0.02))
    tokens = torch.nn.Embedding(1000, d_model)
    torch.nn.init.normal_(tokens.weight, std=0.02)  # GPT-2's init, as GPT.reset_parameters
    ratio = pe.norm(dim=-1).mean() / tokens.weight.norm(dim=-1).mean()
    assert 0.9 < ratio < 1.1
    louder = nima.get("positional", "sinusoidal")(**sizes, scale=1.0)
    louder_pe = louder.embed(torch.zeros(1, 3, d_model), torch.arange(3))[0]
    torch.testing.assert_close(louder_pe, pe[:3] * 50)


# --- ALiBi ----------------------------------------------------------------------------------


def test_alibi_slopes_are_the_papers():
    """Geometric slopes 2^(-8/n), ..., 2^(-8) for n = 2^k heads; for other n, those of the
    closest smaller power of two, then every other slope of twice as many (the paper's code)."""
    assert alibi_slopes(8) == [2.0 ** -(h + 1) for h in range(8)]
    assert alibi_slopes(4) == [2.0 ** -(2 * (h + 1)) for h in range(4)]
    assert alibi_slopes(6) == alibi_slopes(4) + [2.0**-1, 2.0**-3]
    assert alibi_slopes(1) == [2.0**-8]


def test_alibi_bias_is_linear_in_the_distance():
    alibi = ALiBi(**SIZES)  # 4 heads: slopes 1/4, 1/16, 1/64, 1/256
    bias = alibi.bias(torch.arange(5), torch.arange(5))  # (1, H, 5, 5)
    assert bias.shape == (1, 4, 5, 5) and bias.dtype == torch.float32
    distance = (torch.arange(5)[:, None] - torch.arange(5)[None]).abs().float()
    for h, slope in enumerate(alibi_slopes(4)):
        torch.testing.assert_close(bias[0, h], -slope * distance)
    assert not list(alibi.parameters())  # fixed
    assert (
        alibi.embed(x := rand(2, 5, 32), alibi.prepare(torch.arange(5))) is x
    )  # acts on bias only


@pytest.mark.parametrize("shift", [1, 5, 100, 10_000])
def test_alibi_bias_depends_only_on_relative_offset(shift: int):
    """Shifting query and key positions together keeps the bias; per-batch positions and key
    positions from a cache (Nk != Nq) included. No table: positions far past max_len work."""
    alibi = ALiBi(**SIZES)
    g = torch.Generator().manual_seed(7)
    q_pos = torch.randint(0, 40, (3, 6), generator=g)  # (B, Nq)
    k_pos = torch.randint(0, 40, (3, 9), generator=g)  # (B, Nk)
    base = alibi.bias(q_pos, k_pos)
    assert base.shape == (3, 4, 6, 9)
    torch.testing.assert_close(alibi.bias(q_pos + shift, k_pos + shift), base, atol=0, rtol=0)


@pytest.mark.parametrize("n_heads", [1, 4, 6, 12])
def test_alibi_passes_the_relative_bias_check(n_heads: int):
    alibi = ALiBi(d_model=8 * n_heads, n_heads=n_heads, head_dim=8, max_len=16)
    assert check_relative_bias(alibi.bias, n_heads=n_heads) == 0.0


def test_the_relative_bias_check_catches_an_absolute_bias():
    alibi = ALiBi(**SIZES)

    def absolute(q_pos, k_pos):  # depends on where the keys are, not only on the offset
        return alibi.bias(q_pos, k_pos) - 0.01 * k_pos[..., None, None, :].float()

    with pytest.raises(AssertionError, match="shifted by 1: the bias changed by 0.01"):
        check_relative_bias(absolute, n_heads=4)
    with pytest.raises(AssertionError, match="does not broadcast"):
        check_relative_bias(lambda q, k: torch.zeros(5, 3), n_heads=4)


def test_alibi_keeps_fp32_slopes_in_a_bf16_model():
    alibi = ALiBi(d_model=48, n_heads=6, head_dim=8, max_len=16)  # 6 heads: slopes not dyadic
    want = alibi.bias(torch.arange(300), torch.arange(300))
    alibi.to(torch.bfloat16)
    got = alibi.bias(torch.arange(300), torch.arange(300))
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, want, atol=0, rtol=0)


def test_alibi_extrapolates_past_the_trained_length():
    """A model built for 16 positions runs on 64 (no table to fall off) and stays causal there."""
    torch.manual_seed(0)
    model = GPT(
        vocab_size=11, context_length=16, d_model=32, n_layers=2, n_heads=4,
        attention=nima.get("attention", "sdpa")(), positional=ALiBi,
    ).eval()  # fmt: skip
    idx = torch.randint(0, 11, (2, 64))
    logits = model(idx)
    assert logits.shape == (2, 64, 11) and torch.isfinite(logits).all()
    changed = idx.clone()
    changed[:, 40:] = (changed[:, 40:] + 1) % 11
    torch.testing.assert_close(model(changed)[:, :40], logits[:, :40])


def test_none_is_the_identity():
    none = nima.get("positional", "none")(**SIZES)
    x, q, k = rand(2, 5, 32), rand(2, 4, 5, 8), rand(2, 2, 5, 8)
    positions = torch.arange(5)
    assert none.embed(x, positions) is x
    assert none.rotate(q, k, positions) == (q, k)


# --- RoPE's interleaved layout -----------------------------------------------------------------


def pairs_to_halves(x: torch.Tensor) -> torch.Tensor:
    """Dimensions (0, 1, 2, 3, ...) -> (0, 2, 4, ..., 1, 3, 5, ...): interleaved pairs to halves."""
    return torch.cat((x[..., 0::2], x[..., 1::2]), dim=-1)


def halves_to_pairs(x: torch.Tensor) -> torch.Tensor:
    first, second = x.chunk(2, dim=-1)
    return torch.stack((first, second), dim=-1).flatten(-2)


@pytest.mark.parametrize(
    "dtype,tol", [(torch.float32, 1e-6), (torch.bfloat16, 0), (torch.float16, 0)]
)
@pytest.mark.parametrize("shape", [(2, 4, 7, 8), (1, 3, 1, 16), (3, 2, 33, 64)])
@pytest.mark.parametrize("batched", [False, True])
def test_interleaved_rope_is_half_rope_on_permuted_dimensions(shape, dtype, tol, batched):
    """Interleaved pairs (2i, 2i+1) rotate as the half layout's pairs (i, i + D/2) after a fixed
    permutation: values and gradients. fp32 within 1e-6 (a complex multiply rounds as its own
    mul-add); bf16/fp16 identical after the cast back (both are fp32 math)."""
    B, H, N, D = shape
    positions = torch.randint(
        0, 500, (B, N) if batched else (N,), generator=torch.Generator().manual_seed(1)
    )
    half, interleaved = RoPE(head_dim=D), RoPE(head_dim=D, layout="interleaved")
    x = rand(*shape, seed=N).to(dtype).requires_grad_()
    got = interleaved.rotate(x, x, positions)[0]
    want = halves_to_pairs(half.rotate(pairs_to_halves(x), x, positions)[0])
    assert got.dtype == dtype
    torch.testing.assert_close(got.float(), want.float(), atol=tol, rtol=tol)
    grad = rand(*shape, seed=N + 1).to(dtype)
    (g_got,) = torch.autograd.grad(got, x, grad)
    (g_want,) = torch.autograd.grad(want, x, grad)
    torch.testing.assert_close(g_got.float(), g_want.float(), atol=tol or 1e-2, rtol=tol or 1e-2)


def test_interleaved_rope_reads_q_and_k_in_place_and_at_odd_offsets():
    """q and k sliced out of a fused qkv projection are rotated without a copy; a tensor whose
    pairs cannot be viewed as complex numbers (odd storage offset) is copied, same result."""
    B, N, H, D = 2, 9, 4, 8
    rope = RoPE(head_dim=D, layout="interleaved")
    qkv = rand(B, N, 3 * H * D + 1, seed=3)
    q = qkv[..., : H * D].view(B, N, H, D).transpose(1, 2)  # a strided view, even offsets
    k_odd = qkv[..., 1 : 1 + H * D].reshape(B, N, H, D).transpose(1, 2)  # offset 1: copied
    got_q, got_k = rope.rotate(q, k_odd, torch.arange(N))
    want_q, want_k = rope.rotate(q.contiguous(), k_odd.contiguous(), torch.arange(N))
    # within an ulp: the vectorised complex multiply may round a strided input differently
    torch.testing.assert_close(got_q, want_q, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(got_k, want_k, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("shift", [0, 5, 1000])
def test_interleaved_rope_scores_depend_only_on_relative_offset(shift):
    rope = RoPE(head_dim=16, layout="interleaved")
    q, k = rand(1, 2, 6, 16, seed=4), rand(1, 2, 6, 16, seed=5)
    positions = torch.arange(6)
    scores = lambda p: torch.einsum("bhid,bhjd->bhij", *rope.rotate(q, k, p))  # noqa: E731
    torch.testing.assert_close(scores(positions + shift), scores(positions), atol=1e-4, rtol=1e-4)


def test_interleaved_gpt_compiles_and_never_syncs():
    model = GPT(vocab_size=37, context_length=16, d_model=32, n_layers=2, n_heads=4,
                attention=nima.get("attention", "sdpa")(),
                positional=lambda **kw: RoPE(**kw, layout="interleaved"))  # fmt: skip
    idx = torch.randint(0, 37, (2, 11))
    explanation = torch._dynamo.explain(model)(idx)
    assert explanation.graph_break_count == 0, explanation.break_reasons


def test_rope_layouts_are_checked():
    with pytest.raises(ConfigError, match="layout='pairs'.*'half', 'interleaved'"):
        RoPE(head_dim=8, layout="pairs")
    with pytest.raises(ConfigError, match="rope_triton.*'half'"):
        nima.get("positional", "rope_triton")(head_dim=8, layout="interleaved")
