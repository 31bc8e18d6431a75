"""attention.triton kernels: FlashAttention-2-style fused attention, forward and backward.

One op, as Liger-Kernel lays it out: the Triton kernels and the autograd Function live here;
the plugin class is `nima_attention.triton_plugin.TritonAttention`, the parity tests are
tests/test_triton_attention.py and the benchmark benchmarks/bench_attention.py.

- Forward: online softmax over key blocks; the (Nq, Nk) score matrix never exists. The row
  log-sum-exp (base 2, of the scaled scores) is saved for the backward pass.
- Backward: FlashAttention-2's two passes. One program per key block computes dK and dV (for a
  GQA group it loops over the group's query heads itself, so repeated K/V are never
  materialised and nothing is accumulated across programs); another per query block computes
  dQ. No atomics: the gradients are bitwise deterministic.
- Masks: causal aligned bottom-right (query i sees key j <= i + Nk - Nq), bool key padding,
  tails of any length. Blocks wholly visible skip the mask; a query with no visible key gets
  output 0 and log-sum-exp +inf, so its probabilities (and gradients) are exactly 0.
- Head dims: the kernels work on BLOCK_D = max(16, next power of two) columns and mask the
  rest, so any D <= 256 works; 16/32/64/128 waste nothing.
- Precision: fp32/fp16/bf16 inputs, fp32 accumulation. fp32 dots are IEEE unless tf32 is
  allowed.
- Offsets: pointer offsets are int64 (batch/head bases from int64 program ids, row offsets from
  int64 row indices), so tensors of 2^31 elements or more are addressed correctly.
- Configs: on CUDA each kernel is autotuned over its sweep (FWD_SWEEP, BWD_KV_SWEEP, BWD_Q_SWEEP),
  keyed by power-of-two buckets of Nq and Nk (length_bucket), so a new length re-benchmarks only
  when it crosses into a new bucket, not at every decode step. Under TRITON_INTERPRET=1 (CPU
  tensors) one fixed config runs. `triton_attention(..., configs=)` pins one config per kernel
  instead of autotuning: the tests run every config of the CUDA sweeps that way. TRITON_INTERPRET
  must be set before this module (and triton) is first imported.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from typing import NamedTuple

import torch
import triton
import triton.language as tl

from nima.capabilities import triton_interpreter

INTERPRET = triton_interpreter()
LOG2E = 1.4426950408889634

# Tests set this to fill every output buffer with NaN before a kernel runs, so an element a
# kernel forgets to write fails the parity check instead of passing on leftover memory.
POISON_OUTPUTS = False


def _empty(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    out = torch.empty(shape, dtype=dtype, device=device)
    return out.fill_(float("nan")) if POISON_OUTPUTS else out


def _sweep(blocks: list[tuple[int, int]]) -> list[triton.Config]:
    """The CUDA autotune sweep: each (BLOCK_M, BLOCK_N) with 4 or 8 warps, 2 or 3 stages."""
    return [
        triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=w, num_stages=s)
        for bm, bn in blocks
        for w in (4, 8)
        for s in (2, 3)
    ]


FWD_SWEEP = _sweep([(bm, bn) for bm in (64, 128) for bn in (32, 64, 128) if bn <= bm])
BWD_KV_SWEEP = _sweep([(bm, bn) for bm in (32, 64) for bn in (64, 128)])
BWD_Q_SWEEP = _sweep([(bm, bn) for bm in (64, 128) for bn in (32, 64)])


def _autotuned(sweep: list[triton.Config], block_m: int, block_n: int) -> list[triton.Config]:
    """The sweep on CUDA; one fixed config under the interpreter (autotune needs a GPU)."""
    if INTERPRET:
        return [triton.Config({"BLOCK_M": block_m, "BLOCK_N": block_n}, num_warps=4, num_stages=1)]
    return sweep


def length_bucket(n: int) -> int:
    """The autotune key of a sequence length: the next power of two, at least 16."""
    return max(16, triton.next_power_of_2(n))


# N_Q_BUCKET/N_K_BUCKET are kernel arguments used only here, as the key: with the exact lengths
# in the key, every decode step and every new tail batch would re-benchmark the whole sweep.
AUTOTUNE_KEY = ["N_Q_BUCKET", "N_K_BUCKET", "HEAD_DIM", "CAUSAL", "HAS_MASK"]


@triton.jit
def _tile_offsets(offs_r, offs_d, stride_r, stride_d):
    """(rows, BLOCK_D) int64 offsets r*stride_r + d*stride_d: int32 would wrap at 2^31."""
    return offs_r.to(tl.int64)[:, None] * stride_r + offs_d[None, :] * stride_d


@triton.jit
def _load_tile(base, offs_r, offs_d, stride_r, stride_d, r_ok, d_ok):
    """A (rows, BLOCK_D) tile: row r of head dim d at base + r*stride_r + d*stride_d; 0 outside."""
    return tl.load(
        base + _tile_offsets(offs_r, offs_d, stride_r, stride_d),
        mask=r_ok[:, None] & d_ok[None, :], other=0.0,
    )  # fmt: skip


@triton.jit
def _load_tile_t(base, offs_r, offs_d, stride_r, stride_d, r_ok, d_ok):
    """The same tile transposed, (BLOCK_D, rows): the right operand of Q K^T and dO V^T."""
    return tl.load(
        base + offs_r.to(tl.int64)[None, :] * stride_r + offs_d[:, None] * stride_d,
        mask=r_ok[None, :] & d_ok[:, None], other=0.0,
    )  # fmt: skip


@triton.jit
def _store_tile(base, offs_r, offs_d, stride_r, stride_d, r_ok, d_ok, value):
    """Store a (rows, BLOCK_D) tile, cast to the destination dtype, where rows and dims exist."""
    tl.store(
        base + _tile_offsets(offs_r, offs_d, stride_r, stride_d),
        value.to(base.dtype.element_ty), mask=r_ok[:, None] & d_ok[None, :],
    )  # fmt: skip


@triton.jit
def _visible(
    offs_m, offs_n, keep, N_Q, N_K,
    CAUSAL: tl.constexpr, HAS_MASK: tl.constexpr, MASKED: tl.constexpr,
):  # fmt: skip
    """(BLOCK_M, BLOCK_N) bool: query offs_m may attend key offs_n. keep: padding (BLOCK_N,)."""
    ok = offs_n[None, :] >= 0  # all True, in the (BLOCK_M, BLOCK_N) shape
    if MASKED:
        ok = ok & (offs_n[None, :] < N_K)
        if CAUSAL:
            ok = ok & (offs_n[None, :] <= offs_m[:, None] + (N_K - N_Q))
    if HAS_MASK:
        ok = ok & keep[None, :]
    return ok


@triton.jit
def _fwd_inner(
    acc, l_i, m_i, q, k_base, v_base, mask_base, offs_m, offs_d,
    stride_kn, stride_kd, stride_vn, stride_vd, qk_scale, N_Q, N_K, lo, hi,
    HEAD_DIM: tl.constexpr, BLOCK_N: tl.constexpr, CAUSAL: tl.constexpr,
    HAS_MASK: tl.constexpr, MASKED: tl.constexpr, PRECISION: tl.constexpr,
):  # fmt: skip
    for start_n in range(lo, hi, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        n_ok = offs_n < N_K
        d_ok = offs_d < HEAD_DIM
        kt = _load_tile_t(k_base, offs_n, offs_d, stride_kn, stride_kd, n_ok, d_ok)  # K^T
        s = tl.dot(q, kt, input_precision=PRECISION) * qk_scale  # (BLOCK_M, BLOCK_N), log2 units
        keep = n_ok
        if HAS_MASK:
            keep = tl.load(mask_base + offs_n, mask=n_ok, other=0) != 0
        if MASKED or HAS_MASK:
            ok = _visible(offs_m, offs_n, keep, N_Q, N_K, CAUSAL, HAS_MASK, MASKED)
            s = tl.where(ok, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # rows with nothing visible yet
        p = tl.exp2(s - m_safe[:, None])
        alpha = tl.exp2(m_i - m_safe)
        l_i = l_i * alpha + tl.sum(p, 1)
        v = _load_tile(v_base, offs_n, offs_d, stride_vn, stride_vd, n_ok, d_ok)
        acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None], input_precision=PRECISION)
        m_i = m_new
    return acc, l_i, m_i


@triton.autotune(configs=_autotuned(FWD_SWEEP, 32, 16), key=AUTOTUNE_KEY)
@triton.jit
def _attn_fwd(
    Q, K, V, OUT, LSE, MASK,
    stride_qb, stride_qh, stride_qn, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_ob, stride_oh, stride_on, stride_od,
    stride_mb, H, GROUP, N_Q, N_K, N_Q_BUCKET, N_K_BUCKET, qk_scale,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, CAUSAL: tl.constexpr,
    HAS_MASK: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    """Grid (Nq blocks, B*H): O = softmax(Q K^T * scale) V for one query block of one head."""
    start_m = tl.program_id(0) * BLOCK_M
    bh = tl.program_id(1).to(tl.int64)  # int64: b * stride_qb overflows int32 past 2^31
    b = bh // H
    h = bh % H
    kv_h = h // GROUP
    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    m_ok = offs_m < N_Q
    d_ok = offs_d < HEAD_DIM
    q = _load_tile(
        Q + b * stride_qb + h * stride_qh, offs_m, offs_d, stride_qn, stride_qd, m_ok, d_ok
    )
    k_base = K + b * stride_kb + kv_h * stride_kh
    v_base = V + b * stride_vb + kv_h * stride_vh
    mask_base = MASK + b * stride_mb

    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    # Keys [0, full) are visible to every query of the block (no causal/tail mask needed);
    # keys [full, hi) need the mask; keys >= hi are hidden from the whole block (causal).
    hi = N_K
    full = N_K
    if CAUSAL:
        hi = tl.maximum(tl.minimum(start_m + BLOCK_M + N_K - N_Q, N_K), 0)
        full = tl.maximum(tl.minimum(start_m + 1 + N_K - N_Q, N_K), 0)
    full = (full // BLOCK_N) * BLOCK_N
    acc, l_i, m_i = _fwd_inner(
        acc, l_i, m_i, q, k_base, v_base, mask_base, offs_m, offs_d,
        stride_kn, stride_kd, stride_vn, stride_vd, qk_scale, N_Q, N_K, 0, full,
        HEAD_DIM, BLOCK_N, CAUSAL, HAS_MASK, False, PRECISION,
    )  # fmt: skip
    acc, l_i, m_i = _fwd_inner(
        acc, l_i, m_i, q, k_base, v_base, mask_base, offs_m, offs_d,
        stride_kn, stride_kd, stride_vn, stride_vd, qk_scale, N_Q, N_K, full, hi,
        HEAD_DIM, BLOCK_N, CAUSAL, HAS_MASK, True, PRECISION,
    )  # fmt: skip

    has_key = l_i > 0.0
    l_safe = tl.where(has_key, l_i, 1.0)
    out = acc / l_safe[:, None]  # rows with no visible key: acc == 0, so out == 0
    lse = tl.where(has_key, m_i + tl.log2(l_safe), float("inf"))  # +inf: p = 2^(s - lse) = 0
    _store_tile(OUT + b * stride_ob + h * stride_oh, offs_m, offs_d, stride_on, stride_od,
                m_ok, d_ok, out)  # fmt: skip
    tl.store(LSE + bh * N_Q + offs_m, lse, mask=m_ok)


@triton.jit
def _attn_bwd_delta(
    OUT, DO, DELTA,
    stride_ob, stride_oh, stride_on, stride_od,
    stride_dob, stride_doh, stride_don, stride_dod,
    H, N_Q, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr,
):  # fmt: skip
    """Grid (Nq blocks, B*H): Delta_i = sum_d dO_id * O_id, the softmax-backward row term."""
    bh = tl.program_id(1).to(tl.int64)
    b = bh // H
    h = bh % H
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    m_ok = offs_m < N_Q
    d_ok = offs_d < HEAD_DIM
    o = _load_tile(OUT + b * stride_ob + h * stride_oh, offs_m, offs_d, stride_on, stride_od,
                   m_ok, d_ok)  # fmt: skip
    do = _load_tile(DO + b * stride_dob + h * stride_doh, offs_m, offs_d, stride_don, stride_dod,
                    m_ok, d_ok)  # fmt: skip
    delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), 1)
    tl.store(DELTA + bh * N_Q + offs_m, delta, mask=m_ok)


@triton.jit
def _bwd_kv_inner(
    dk, dv, k, v, q_base, do_base, lse_base, delta_base, offs_n, offs_d, keep,
    stride_qn, stride_qd, stride_don, stride_dod, qk_scale, N_Q, N_K, lo, hi,
    HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, CAUSAL: tl.constexpr,
    HAS_MASK: tl.constexpr, MASKED: tl.constexpr, PRECISION: tl.constexpr,
):  # fmt: skip
    d_ok = offs_d < HEAD_DIM
    for start_m in range(lo, hi, BLOCK_M):
        offs_m = start_m + tl.arange(0, BLOCK_M)
        m_ok = offs_m < N_Q
        q = _load_tile(q_base, offs_m, offs_d, stride_qn, stride_qd, m_ok, d_ok)
        do = _load_tile(do_base, offs_m, offs_d, stride_don, stride_dod, m_ok, d_ok)
        # Queries past Nq: lse = +inf makes their probabilities exactly 0.
        lse = tl.load(lse_base + offs_m, mask=m_ok, other=float("inf"))
        delta = tl.load(delta_base + offs_m, mask=m_ok, other=0.0)
        st = tl.dot(k, tl.trans(q), input_precision=PRECISION) * qk_scale  # (BLOCK_N, BLOCK_M)
        pt = tl.exp2(st - lse[None, :])
        if MASKED or HAS_MASK:
            ok = tl.trans(_visible(offs_m, offs_n, keep, N_Q, N_K, CAUSAL, HAS_MASK, MASKED))
            pt = tl.where(ok, pt, 0.0)
        dv = tl.dot(pt.to(do.dtype), do, dv, input_precision=PRECISION)
        dpt = tl.dot(v, tl.trans(do), input_precision=PRECISION)  # (BLOCK_N, BLOCK_M)
        dst = pt * (dpt - delta[None, :])
        dk = tl.dot(dst.to(q.dtype), q, dk, input_precision=PRECISION)
    return dk, dv


@triton.autotune(configs=_autotuned(BWD_KV_SWEEP, 16, 32), key=AUTOTUNE_KEY)
@triton.jit
def _attn_bwd_dkdv(
    Q, K, V, DO, LSE, DELTA, DK, DV, MASK,
    stride_qb, stride_qh, stride_qn, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_dob, stride_doh, stride_don, stride_dod,
    stride_dkb, stride_dkh, stride_dkn, stride_dkd,
    stride_mb, H, H_KV, GROUP, N_Q, N_K, N_Q_BUCKET, N_K_BUCKET, qk_scale, scale,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, CAUSAL: tl.constexpr,
    HAS_MASK: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    """Grid (Nk blocks, B*Hkv): dK, dV of one key block, summed over its GQA group's heads."""
    start_n = tl.program_id(0) * BLOCK_N
    bh = tl.program_id(1).to(tl.int64)
    b = bh // H_KV
    kv_h = bh % H_KV
    offs_n = start_n + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    n_ok = offs_n < N_K
    d_ok = offs_d < HEAD_DIM
    k = _load_tile(K + b * stride_kb + kv_h * stride_kh, offs_n, offs_d, stride_kn, stride_kd,
                   n_ok, d_ok)  # fmt: skip
    v = _load_tile(V + b * stride_vb + kv_h * stride_vh, offs_n, offs_d, stride_vn, stride_vd,
                   n_ok, d_ok)  # fmt: skip
    keep = n_ok
    if HAS_MASK:
        keep = tl.load(MASK + b * stride_mb + offs_n, mask=n_ok, other=0) != 0
    dk = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    # Queries [lo, full) need the causal mask; queries [full, Nq) see every key of the block;
    # queries < lo see none of it. Keys past Nk need no mask here: their rows of dK and dV
    # are never stored, and each row depends on its own key only.
    lo = 0
    full = 0
    if CAUSAL:
        lo = tl.maximum(tl.minimum(start_n - (N_K - N_Q), N_Q), 0)
        lo = (lo // BLOCK_M) * BLOCK_M
        full = tl.maximum(tl.minimum(start_n + BLOCK_N - 1 - (N_K - N_Q), N_Q), 0)
        full = tl.cdiv(full, BLOCK_M) * BLOCK_M
    for g in range(GROUP):
        bh = b * H + kv_h * GROUP + g
        h = kv_h * GROUP + g
        q_base = Q + b * stride_qb + h * stride_qh
        do_base = DO + b * stride_dob + h * stride_doh
        dk, dv = _bwd_kv_inner(
            dk, dv, k, v, q_base, do_base, LSE + bh * N_Q, DELTA + bh * N_Q, offs_n, offs_d,
            keep, stride_qn, stride_qd, stride_don, stride_dod, qk_scale, N_Q, N_K, lo, full,
            HEAD_DIM, BLOCK_M, CAUSAL, HAS_MASK, True, PRECISION,
        )  # fmt: skip
        dk, dv = _bwd_kv_inner(
            dk, dv, k, v, q_base, do_base, LSE + bh * N_Q, DELTA + bh * N_Q, offs_n, offs_d,
            keep, stride_qn, stride_qd, stride_don, stride_dod, qk_scale, N_Q, N_K, full, N_Q,
            HEAD_DIM, BLOCK_M, CAUSAL, HAS_MASK, False, PRECISION,
        )  # fmt: skip
    kv_offset = b * stride_dkb + kv_h * stride_dkh  # dK and dV share shape and strides
    _store_tile(DK + kv_offset, offs_n, offs_d, stride_dkn, stride_dkd, n_ok, d_ok, dk * scale)
    _store_tile(DV + kv_offset, offs_n, offs_d, stride_dkn, stride_dkd, n_ok, d_ok, dv)


@triton.jit
def _bwd_q_inner(
    dq, q, do, lse, delta, k_base, v_base, mask_base, offs_m, offs_d,
    stride_kn, stride_kd, stride_vn, stride_vd, qk_scale, N_Q, N_K, lo, hi,
    HEAD_DIM: tl.constexpr, BLOCK_N: tl.constexpr, CAUSAL: tl.constexpr,
    HAS_MASK: tl.constexpr, MASKED: tl.constexpr, PRECISION: tl.constexpr,
):  # fmt: skip
    d_ok = offs_d < HEAD_DIM
    for start_n in range(lo, hi, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        n_ok = offs_n < N_K
        kt = _load_tile_t(k_base, offs_n, offs_d, stride_kn, stride_kd, n_ok, d_ok)
        vt = _load_tile_t(v_base, offs_n, offs_d, stride_vn, stride_vd, n_ok, d_ok)
        s = tl.dot(q, kt, input_precision=PRECISION) * qk_scale  # (BLOCK_M, BLOCK_N)
        p = tl.exp2(s - lse[:, None])
        if MASKED or HAS_MASK:
            keep = n_ok
            if HAS_MASK:
                keep = tl.load(mask_base + offs_n, mask=n_ok, other=0) != 0
            p = tl.where(_visible(offs_m, offs_n, keep, N_Q, N_K, CAUSAL, HAS_MASK, MASKED), p, 0.0)
        dp = tl.dot(do, vt, input_precision=PRECISION)
        ds = p * (dp - delta[:, None])
        dq = tl.dot(ds.to(kt.dtype), tl.trans(kt), dq, input_precision=PRECISION)
    return dq


@triton.autotune(configs=_autotuned(BWD_Q_SWEEP, 32, 16), key=AUTOTUNE_KEY)
@triton.jit
def _attn_bwd_dq(
    Q, K, V, DO, LSE, DELTA, DQ, MASK,
    stride_qb, stride_qh, stride_qn, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_dob, stride_doh, stride_don, stride_dod,
    stride_dqb, stride_dqh, stride_dqn, stride_dqd,
    stride_mb, H, GROUP, N_Q, N_K, N_Q_BUCKET, N_K_BUCKET, qk_scale, scale,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, CAUSAL: tl.constexpr,
    HAS_MASK: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    """Grid (Nq blocks, B*H): dQ of one query block, walking the key blocks as the forward."""
    start_m = tl.program_id(0) * BLOCK_M
    bh = tl.program_id(1).to(tl.int64)
    b = bh // H
    h = bh % H
    kv_h = h // GROUP
    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    m_ok = offs_m < N_Q
    d_ok = offs_d < HEAD_DIM
    q = _load_tile(Q + b * stride_qb + h * stride_qh, offs_m, offs_d, stride_qn, stride_qd,
                   m_ok, d_ok)  # fmt: skip
    do = _load_tile(DO + b * stride_dob + h * stride_doh, offs_m, offs_d, stride_don, stride_dod,
                    m_ok, d_ok)  # fmt: skip
    lse = tl.load(LSE + bh * N_Q + offs_m, mask=m_ok, other=float("inf"))
    delta = tl.load(DELTA + bh * N_Q + offs_m, mask=m_ok, other=0.0)
    k_base = K + b * stride_kb + kv_h * stride_kh
    v_base = V + b * stride_vb + kv_h * stride_vh
    dq = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    hi = N_K
    full = N_K
    if CAUSAL:
        hi = tl.maximum(tl.minimum(start_m + BLOCK_M + N_K - N_Q, N_K), 0)
        full = tl.maximum(tl.minimum(start_m + 1 + N_K - N_Q, N_K), 0)
    full = (full // BLOCK_N) * BLOCK_N
    dq = _bwd_q_inner(
        dq, q, do, lse, delta, k_base, v_base, MASK + b * stride_mb, offs_m, offs_d,
        stride_kn, stride_kd, stride_vn, stride_vd, qk_scale, N_Q, N_K, 0, full,
        HEAD_DIM, BLOCK_N, CAUSAL, HAS_MASK, False, PRECISION,
    )  # fmt: skip
    dq = _bwd_q_inner(
        dq, q, do, lse, delta, k_base, v_base, MASK + b * stride_mb, offs_m, offs_d,
        stride_kn, stride_kd, stride_vn, stride_vd, qk_scale, N_Q, N_K, full, hi,
        HEAD_DIM, BLOCK_N, CAUSAL, HAS_MASK, True, PRECISION,
    )  # fmt: skip
    _store_tile(DQ + b * stride_dqb + h * stride_dqh, offs_m, offs_d, stride_dqn, stride_dqd,
                m_ok, d_ok, dq * scale)  # fmt: skip


def _block_d(head_dim: int) -> int:
    return max(16, triton.next_power_of_2(head_dim))


def _precision(dtype: torch.dtype, allow_tf32: bool) -> str:
    return "tf32" if dtype != torch.float32 or allow_tf32 else "ieee"


def _mask_args(mask: torch.Tensor | None, like: torch.Tensor) -> tuple[torch.Tensor, int]:
    """The padding mask as uint8 (B, Nk) and its batch stride; a dummy pointer when absent."""
    if mask is None:
        return like, 0
    mask = mask.contiguous().view(torch.uint8)
    return mask, mask.stride(0)


class Configs(NamedTuple):
    """One config per autotuned kernel, run instead of autotuning (the tests pin each one)."""

    fwd: triton.Config
    bwd_kv: triton.Config
    bwd_q: triton.Config


def _launch(kernel, grid, config: triton.Config | None, *args, **kwargs) -> None:
    """Launch the autotuned kernel, or its plain jit function with `config` pinned."""
    if config is None:
        kernel[grid](*args, **kwargs)
    else:
        kernel.fn[grid](*args, **kwargs, **config.all_kwargs())


def _forward(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None,
    causal: bool,
    scale: float,
    allow_tf32: bool,
    configs: Configs | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    B, H, n_q, D = q.shape
    h_kv, n_k = k.shape[1], k.shape[2]
    o = _empty((B, H, n_q, D), q.dtype, q.device)
    lse = _empty((B, H, n_q), torch.float32, q.device)  # base-2 log-sum-exp of scaled scores
    mask_t, stride_mb = _mask_args(mask, q)
    grid = lambda meta: (triton.cdiv(n_q, meta["BLOCK_M"]), B * H)
    _launch(
        _attn_fwd, grid, configs and configs.fwd,
        q, k, v, o, lse, mask_t, *q.stride(), *k.stride(), *v.stride(), *o.stride(),
        stride_mb, H, H // h_kv, n_q, n_k, length_bucket(n_q), length_bucket(n_k), scale * LOG2E,
        HEAD_DIM=D, BLOCK_D=_block_d(D), CAUSAL=causal, HAS_MASK=mask is not None,
        PRECISION=_precision(q.dtype, allow_tf32),
    )  # fmt: skip
    return o, lse


def _backward(
    do: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    o: torch.Tensor,
    lse: torch.Tensor,
    mask: torch.Tensor | None,
    causal: bool,
    scale: float,
    allow_tf32: bool,
    configs: Configs | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    B, H, n_q, D = q.shape
    h_kv, n_k = k.shape[1], k.shape[2]
    block_d = _block_d(D)
    mask_t, stride_mb = _mask_args(mask, q)
    buckets = (length_bucket(n_q), length_bucket(n_k))
    common = dict(
        HEAD_DIM=D, BLOCK_D=block_d, CAUSAL=causal, HAS_MASK=mask is not None,
        PRECISION=_precision(q.dtype, allow_tf32),
    )  # fmt: skip

    delta = _empty((B, H, n_q), torch.float32, q.device)
    delta_block = 16 if INTERPRET else 64
    _attn_bwd_delta[(triton.cdiv(n_q, delta_block), B * H)](
        o, do, delta, *o.stride(), *do.stride(), H, n_q,
        HEAD_DIM=D, BLOCK_D=block_d, BLOCK_M=delta_block,
    )  # fmt: skip

    dk = _empty(k.shape, k.dtype, k.device)
    dv = _empty(v.shape, v.dtype, v.device)  # same shape and strides as dk
    grid = lambda meta: (triton.cdiv(n_k, meta["BLOCK_N"]), B * h_kv)
    _launch(
        _attn_bwd_dkdv, grid, configs and configs.bwd_kv,
        q, k, v, do, lse, delta, dk, dv, mask_t,
        *q.stride(), *k.stride(), *v.stride(), *do.stride(), *dk.stride(),
        stride_mb, H, h_kv, H // h_kv, n_q, n_k, *buckets, scale * LOG2E, scale, **common,
    )  # fmt: skip

    dq = _empty(q.shape, q.dtype, q.device)
    grid = lambda meta: (triton.cdiv(n_q, meta["BLOCK_M"]), B * H)
    _launch(
        _attn_bwd_dq, grid, configs and configs.bwd_q,
        q, k, v, do, lse, delta, dq, mask_t,
        *q.stride(), *k.stride(), *v.stride(), *do.stride(), *dq.stride(),
        stride_mb, H, H // h_kv, n_q, n_k, *buckets, scale * LOG2E, scale, **common,
    )  # fmt: skip
    return dq, dk, dv


class TritonAttentionFunction(torch.autograd.Function):
    """Fused attention with the FlashAttention-2 backward; saves O and the row log-sum-exp."""

    @staticmethod
    def forward(ctx, q, k, v, key_padding_mask, causal, scale, allow_tf32, configs):
        o, lse = _forward(q, k, v, key_padding_mask, causal, scale, allow_tf32, configs)
        ctx.save_for_backward(q, k, v, o, lse, key_padding_mask)
        ctx.causal, ctx.scale, ctx.allow_tf32, ctx.configs = causal, scale, allow_tf32, configs
        return o

    @staticmethod
    def backward(ctx, do):
        q, k, v, o, lse, mask = ctx.saved_tensors
        dq, dk, dv = _backward(
            do, q, k, v, o, lse, mask, ctx.causal, ctx.scale, ctx.allow_tf32, ctx.configs
        )
        return dq, dk, dv, None, None, None, None, None


def triton_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool,
    scale: float | None = None,
    key_padding_mask: torch.Tensor | None = None,
    allow_tf32: bool = False,
    configs: Configs | None = None,
) -> torch.Tensor:
    """q (B, H, Nq, D), k and v (B, Hkv, Nk, D) -> (B, H, Nq, D); inputs already validated.

    configs: pin one config per kernel instead of autotuning (tests, to cover every config).
    """
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    with torch.cuda.device(q.device) if q.is_cuda else nullcontext():
        return TritonAttentionFunction.apply(
            q, k, v, key_padding_mask, causal, scale, allow_tf32, configs
        )
