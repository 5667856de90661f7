"""Varlen paged attention for prefill and mixed steps (flash-attention style).

Grid: (query tile, query head, sequence).  Each program takes BLOCK_M of one
sequence's new tokens for one head and streams that sequence's keys and values
(its cached prefix and this step's tokens, all already in the paged cache
because store_kv runs first) through an online softmax.  The key range is cut
to what the tile's masks can reach: up to the last query for causal attention,
from the window's or chunk's start; with bidirectional spans, up to the furthest span end.  Keys are gathered row by row through the
block table, so any cache block size and either layout work.
"""
import os

import torch
import triton
import triton.language as tl

from halinfer.core.attention import AttentionMetadata, LayerKV

from .attention_args import attn_args
from .common import cdiv, dot_precision, on_interpreter
from .kv_dequant import prefill_copy
from .tl_math import (acc_scale, acc_store, acc_zeros, key_scores, load_q, online_softmax, q_row_sums,
                      weighted_values)


# "BLOCK_M x BLOCK_N x num_warps x num_stages" forced for every compiled prefill launch, "": prefill_config's
# choice (for sweeps and for checking a tile under compute-sanitizer; tune_prefill.py patches prefill_config).
PREFILL_TILE = os.environ.get("HALINFER_PREFILL_TILE", "")


@triton.jit
def _attend_tile(q, qsum, qpos, m_i, l_i, acc, n0, hi, bt_row, k_ptr, v_ptr, ks_ptr, vs_ptr, kz_ptr, vz_ptr,
                 span_lo, span_hi, slope, d, D: tl.constexpr, dv, DV: tl.constexpr, kvh,
                 stride_kb, stride_kt, stride_kh, stride_vb, stride_vt, stride_vh,
                 stride_ksb, stride_kst, stride_ksh, stride_vsb, stride_vst, stride_vsh,
                 scale, soft_cap, window, chunk, BS: tl.constexpr, SOFTCAP: tl.constexpr, ALIBI: tl.constexpr,
                 WINDOW: tl.constexpr, CHUNK: tl.constexpr, KV: tl.constexpr, ASM: tl.constexpr,
                 CAUSAL: tl.constexpr, BIDIR: tl.constexpr, BLOCK_N: tl.constexpr, PREC: tl.constexpr,
                 MASKED: tl.constexpr):
    """One key tile [n0, n0 + BLOCK_N) into the online softmax (m_i, l_i, acc).  MASKED=False:
    the caller knows every row sees every key of the tile, so no mask is built."""
    offs = n0 + tl.arange(0, BLOCK_N)
    nmask = offs < hi
    blk = tl.load(bt_row + offs // BS, mask=nmask, other=0).to(tl.int64)
    tok = offs % BS
    sc = key_scores(q, qsum, k_ptr, ks_ptr, kz_ptr, blk, tok, kvh, nmask, d, D, stride_kb, stride_kt, stride_kh,
                    stride_ksb, stride_kst, stride_ksh, scale, soft_cap, KV, SOFTCAP, PREC, ASM)
    if ALIBI:   # (slope times log2(e), as the scores)
        sc = sc + slope * (offs[None, :] - qpos[:, None]).to(tl.float32)
    if MASKED:
        allowed = nmask[None, :]
        if CAUSAL:
            seen = offs[None, :] <= qpos[:, None]
            if BIDIR:
                seen = seen | ((offs[None, :] >= span_lo[:, None]) & (offs[None, :] < span_hi[:, None]))
            allowed = allowed & seen
        if WINDOW:
            allowed = allowed & (qpos[:, None] - offs[None, :] < window)
        if CHUNK:
            allowed = allowed & ((qpos[:, None] // chunk) == (offs[None, :] // chunk))
        sc = tl.where(allowed, sc, float("-inf"))
    p, alpha, m_new, l_i = online_softmax(sc, m_i, l_i)
    acc = weighted_values(acc, alpha, q, p, v_ptr, vs_ptr, vz_ptr, blk, tok, kvh, nmask, dv, DV,
                          stride_vb, stride_vt, stride_vh, stride_vsb, stride_vst, stride_vsh, KV, PREC, ASM)
    return m_new, l_i, acc


@triton.jit
def _prefill_kernel(q_ptr, k_ptr, v_ptr, ks_ptr, vs_ptr, kz_ptr, vz_ptr, o_ptr,
                    q_start_ptr, seq_lens_ptr, bt_ptr, slopes_ptr, sinks_ptr, spans_ptr,
                    stride_qt, stride_qh, stride_ot, stride_oh, stride_bt,
                    stride_kb, stride_kt, stride_kh, stride_vb, stride_vt, stride_vh,
                    stride_ksb, stride_kst, stride_ksh, stride_vsb, stride_vst, stride_vsh,
                    scale, soft_cap, window, chunk,
                    GROUP, D: tl.constexpr, DV: tl.constexpr, BS: tl.constexpr,
                    BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
                    SOFTCAP: tl.constexpr, ALIBI: tl.constexpr, SINKS: tl.constexpr, WINDOW: tl.constexpr,
                    CHUNK: tl.constexpr, KV: tl.constexpr, ASM: tl.constexpr,
                    CAUSAL: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, PREC: tl.constexpr,
                    BIDIR: tl.constexpr = False):
    # Last tiles first: under causal masking they hold the most work.
    mb = tl.num_programs(0) - 1 - tl.program_id(0)
    h = tl.program_id(1)
    b = tl.program_id(2)
    q0 = tl.load(q_start_ptr + b)
    q_len = tl.load(q_start_ptr + b + 1) - q0
    if mb * BLOCK_M >= q_len:
        return
    seq_len = tl.load(seq_lens_ptr + b)
    ctx = seq_len - q_len
    kvh = h // GROUP

    offs_m = mb * BLOCK_M + tl.arange(0, BLOCK_M)
    mmask = offs_m < q_len
    qpos = ctx + offs_m
    d = tl.arange(0, BLOCK_D)
    dv = tl.arange(0, BLOCK_DV)
    rows = (q0 + offs_m).to(tl.int64)
    # (int4 split tiles: q and acc are tuples of channel planes; tl_math.load_q, acc_zeros.)
    q = load_q(q_ptr + rows[:, None] * stride_qt + h * stride_qh, mmask, D, BLOCK_D, KV)
    qsum = q_row_sums(q, KV)   # int4 keys' zeros: z * sum(q)

    # Key range the tile's masks can reach.
    first = ctx + mb * BLOCK_M
    last = ctx + tl.minimum((mb + 1) * BLOCK_M, q_len) - 1
    lo = first * 0
    hi = seq_len
    if CAUSAL:
        hi = last + 1
    span_lo = qpos
    span_hi = qpos
    if BIDIR:   # keys [span start, span end) per query row, seen past the causal edge (Gemma 3 images)
        span_lo = tl.load(spans_ptr + rows * 2, mask=mmask, other=0)
        span_hi = tl.load(spans_ptr + rows * 2 + 1, mask=mmask, other=0)
        hi = tl.minimum(tl.maximum(hi, tl.max(span_hi, axis=0)), seq_len)
    if WINDOW:
        lo = tl.maximum(lo, first - window + 1)
    if CHUNK:
        lo = tl.maximum(lo, (first // chunk) * chunk)
        hi = tl.minimum(hi, (last // chunk + 1) * chunk)
    slope = scale * 0.0
    if ALIBI:
        slope = tl.load(slopes_ptr + h) * 1.4426950408889634   # scores are log2-scaled

    m_i = tl.full([BLOCK_M], -1.0e30, tl.float32)   # finite floor: rows masked so far stay NaN-free
    l_i = tl.full([BLOCK_M], 0.0, tl.float32)
    acc = acc_zeros(BLOCK_M, BLOCK_DV, KV)
    bt_row = bt_ptr + b.to(tl.int64) * stride_bt
    # Key tiles every row of this query tile sees whole (before its first query under causal
    # masking; all but the ragged end without it) skip the masks: the long-prompt hot loop.
    full = hi
    if CAUSAL:
        full = first
    if WINDOW or CHUNK:
        full = lo
    n_full = lo + tl.maximum(full - lo, 0) // BLOCK_N * BLOCK_N
    for n0 in range(lo, n_full, BLOCK_N):
        m_i, l_i, acc = _attend_tile(
            q, qsum, qpos, m_i, l_i, acc, n0, hi, bt_row, k_ptr, v_ptr, ks_ptr, vs_ptr, kz_ptr, vz_ptr,
            span_lo, span_hi, slope, d, D, dv, DV, kvh,
            stride_kb, stride_kt, stride_kh, stride_vb, stride_vt, stride_vh,
            stride_ksb, stride_kst, stride_ksh, stride_vsb, stride_vst, stride_vsh,
            scale, soft_cap, window, chunk, BS, SOFTCAP, ALIBI, WINDOW, CHUNK, KV, ASM, CAUSAL, BIDIR,
            BLOCK_N, PREC, False)
    for n0 in range(n_full, hi, BLOCK_N):
        m_i, l_i, acc = _attend_tile(
            q, qsum, qpos, m_i, l_i, acc, n0, hi, bt_row, k_ptr, v_ptr, ks_ptr, vs_ptr, kz_ptr, vz_ptr,
            span_lo, span_hi, slope, d, D, dv, DV, kvh,
            stride_kb, stride_kt, stride_kh, stride_vb, stride_vt, stride_vh,
            stride_ksb, stride_kst, stride_ksh, stride_vsb, stride_vst, stride_vsh,
            scale, soft_cap, window, chunk, BS, SOFTCAP, ALIBI, WINDOW, CHUNK, KV, ASM, CAUSAL, BIDIR,
            BLOCK_N, PREC, True)

    if SINKS:
        sk = tl.load(sinks_ptr + h) * 1.4426950408889634
        m_f = tl.maximum(m_i, sk)
        a = tl.exp2(m_i - m_f)
        acc = acc_scale(acc, a, KV)
        l_i = l_i * a + tl.exp2(sk - m_f)
    acc_store(o_ptr + rows[:, None] * stride_ot + h * stride_oh, acc, tl.where(l_i == 0.0, 1.0, l_i), mmask,
              DV, BLOCK_DV, KV)


def prefill_config(block_d: int, interp: bool, max_q_len: int = 0, max_seq_len: int = 0, elt: int = 2):
    """(BLOCK_M, BLOCK_N, num_warps, num_stages).  Two-byte head_dim-128 tiles were timed on an
    H200 (benchmarks/tune_prefill.py, Llama-3-8B heads; BENCHMARKS.md): for one 7,680-token
    prompt 128x128 tiles, 8 warps, 3 stages took 1.44 ms a layer against 1.68 ms for 128x64
    (2 stages); for 20 prompts of 400 tokens 128x32, 4 warps, 3 stages took 0.285 ms against 0.349."""
    if interp:
        # Small tiles make small test cases cross tile edges; large ones keep long
        # sequences fast enough (the interpreter pays per tile, not per element).
        return (16 if max_q_len <= 64 else 64), (16 if max_seq_len <= 128 else 64), 1, 1
    if elt == 2 and 64 < block_d <= 128:
        if max_q_len >= 2048:
            return 128, 128, 8, 3
        if max_q_len <= 512:
            return 128, 32, 4, 3
    if block_d <= 64:
        return 128, 64, 4, 2
    if block_d <= 128:
        return 128, 64, 8, 2
    if block_d <= 256:
        return 64, 32, 4, 2
    return 32, 16, 4, 1


def paged_attention_prefill(q: torch.Tensor, kv: LayerKV, meta: AttentionMetadata, *, scale: float,
                            causal=True, sliding_window=None, chunk_size=None, soft_cap=None, alibi_slopes=None,
                            sinks=None, v_head_dim=None, bidir_spans=None, inline_ptx: bool = True) -> torch.Tensor:
    """core.ops.paged.paged_attention for any step (prefill, chunked prefill, mixed).  inline_ptx=False:
    this Triton takes no PTX (attn_args)."""
    interp = on_interpreter(q)
    kv, meta = prefill_copy(q, kv, meta)   # a quantized cache: the step's blocks dequantized once
    a = attn_args(q, kv, sliding_window=sliding_window, chunk_size=chunk_size, soft_cap=soft_cap,
                  alibi_slopes=alibi_slopes, sinks=sinks, v_head_dim=v_head_dim, inline_ptx=inline_ptx and not interp)
    T = a.q.shape[0]
    out = torch.empty((T, a.Hq, a.DV), dtype=q.dtype, device=q.device)
    if T == 0 or meta.num_seqs == 0:
        return out
    block_m, block_n, warps, stages = prefill_config(max(a.block_d, a.block_dv), interp, meta.max_q_len,
                                                     meta.max_seq_len, q.element_size())
    if PREFILL_TILE and not interp:
        block_m, block_n, warps, stages = (int(v) for v in PREFILL_TILE.split("x"))
    grid = (cdiv(max(1, meta.max_q_len), block_m), a.Hq, meta.num_seqs)
    bidir = bidir_spans is not None and bool(causal)
    spans = bidir_spans.to(q.device, torch.int32).contiguous() if bidir else meta.q_start_loc   # unread if not
    _prefill_kernel[grid](
        a.q, a.k, a.v, a.k_scale, a.v_scale, a.k_zero, a.v_zero, out,
        meta.q_start_loc, meta.seq_lens, meta.block_tables, a.slopes, a.sinks, spans,
        a.q.stride(0), a.q.stride(1), out.stride(0), out.stride(1), meta.block_tables.stride(0),
        *a.cache_args(), float(scale), a.soft_cap, a.window, a.chunk,
        **a.flags(), CAUSAL=bool(causal), BLOCK_M=block_m, BLOCK_N=block_n, PREC=dot_precision(q.dtype),
        BIDIR=bidir,
        num_warps=warps, num_stages=stages)
    return out
