"""Paged decode attention (one new token per sequence), split-KV ("flash-decoding").

Grid: (sequence, kv head x head chunk, split).  One program handles every query
head of a GQA group that reads one kv head (up to BLOCK_H of them), so each key
and value tile is loaded once for the whole group.  Each sequence's key range is
divided evenly among the splits at run time, from its length in device memory;
a second kernel merges the splits by their log-sum-exp.

CUDA-graph safe: the grid and the number of splits depend only on the batch
size, head counts and ``meta.max_seq_len`` (which a graph runner sets to its
capacity), never on this step's lengths; every length is read on the device.
"""
import os

import torch
import triton
import triton.language as tl

from halinfer.core.attention import AttentionMetadata, LayerKV

from .attention_args import attn_args
from .common import cdiv, dot_precision, next_pow2, on_interpreter, sm_count
from .pdl import launch_options, pdl_enter
from . import tl_math
from .tl_math import (acc_scale, acc_store, acc_zeros, key_scores, load_keys, load_q, load_values, online_softmax,
                      q_row_sums, scores_from, values_from, weighted_values)

MAX_SPLITS = 64
# num_stages of the decode kernel, 0: decode_stages's choice (set by bench_decode.py --stages).
DECODE_STAGES = int(os.environ.get("HALINFER_DECODE_STAGES", "0"))
# "BLOCK_N x num_warps" of the decode kernel, "": decode_config's choice (bench_decode.py --tiles).
DECODE_TILE = os.environ.get("HALINFER_DECODE_TILE", "")


@triton.jit
def _decode_kernel(q_ptr, k_ptr, v_ptr, ks_ptr, vs_ptr, kz_ptr, vz_ptr, o_ptr, po_ptr, plse_ptr,
                   q_start_ptr, seq_lens_ptr, bt_ptr, slopes_ptr, sinks_ptr,
                   stride_qt, stride_qh, stride_ot, stride_oh,
                   stride_pt, stride_ph, stride_ps, stride_lt, stride_lh, stride_bt,
                   stride_kb, stride_kt, stride_kh, stride_vb, stride_vt, stride_vh,
                   stride_ksb, stride_kst, stride_ksh, stride_vsb, stride_vst, stride_vsh,
                   scale, soft_cap, window, chunk, num_splits,
                   GROUP, D: tl.constexpr, DV: tl.constexpr, BS: tl.constexpr,
                   BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
                   SOFTCAP: tl.constexpr, ALIBI: tl.constexpr, SINKS: tl.constexpr, WINDOW: tl.constexpr,
                   CHUNK: tl.constexpr, KV: tl.constexpr, ASM: tl.constexpr,
                   H_CHUNKS, BLOCK_H: tl.constexpr, BLOCK_N: tl.constexpr,
                   SPLIT: tl.constexpr, PREC: tl.constexpr, PREFETCH: tl.constexpr = 0,
                   USE_PDL: tl.constexpr = False):
    # (PDL: every program waits at entry; with several waves the next kernel is let in only
    # once this grid's last programs have started, so it never takes their SMs)
    pdl_enter(USE_PDL)
    b = tl.program_id(0)
    kvh = tl.program_id(1) // H_CHUNKS
    g = (tl.program_id(1) % H_CHUNKS) * BLOCK_H + tl.arange(0, BLOCK_H)
    s = tl.program_id(2)
    hmask = g < GROUP
    heads = kvh * GROUP + g
    t = tl.load(q_start_ptr + b).to(tl.int64)
    seq_len = tl.load(seq_lens_ptr + b)
    qpos = seq_len - 1

    # Keys this query may see: [lo, seq_len); window and chunk only raise lo.
    lo = seq_len * 0
    if WINDOW:
        lo = tl.maximum(lo, qpos - window + 1)
    if CHUNK:
        lo = tl.maximum(lo, (qpos // chunk) * chunk)
    tiles = (seq_len - lo + BLOCK_N - 1) // BLOCK_N
    per_split = (tiles + num_splits - 1) // num_splits
    start = lo + s * per_split * BLOCK_N
    end = tl.minimum(start + per_split * BLOCK_N, seq_len)

    d = tl.arange(0, BLOCK_D)
    dv = tl.arange(0, BLOCK_DV)
    # (int4 split tiles: q and acc are tuples of channel planes; tl_math.load_q, acc_zeros.)
    q = load_q(q_ptr + t * stride_qt + heads[:, None] * stride_qh, hmask, D, BLOCK_D, KV)
    qsum = q_row_sums(q, KV)   # int4 keys' zeros: z * sum(q)
    if ALIBI:
        slope = tl.load(slopes_ptr + heads, mask=hmask, other=0.0) * 1.4426950408889634   # scores are log2-scaled
    # A finite floor (not -inf) keeps exp2(m_old - m_new) defined before the first key.
    m_i = tl.full([BLOCK_H], -1.0e30, tl.float32)
    l_i = tl.full([BLOCK_H], 0.0, tl.float32)
    acc = acc_zeros(BLOCK_H, BLOCK_DV, KV)
    bt_row = bt_ptr + b.to(tl.int64) * stride_bt
    if PREFETCH == 2:
        # Software pipeline in registers (tl_math.KV_PREFETCH says why): tile i's stored data,
        # scales and zeros are loaded during tile i - 1, from block-table entries loaded during
        # tile i - 2, so no load waits on the block table and each tile's loads overlap the
        # previous tile's dots.  Loads past ``end`` are masked off (no memory traffic); results
        # are those of the loop below, bit for bit (the same arithmetic in the same order).
        offs = start + tl.arange(0, BLOCK_N)
        nmask = offs < end
        blk = tl.load(bt_row + offs // BS, mask=nmask, other=0).to(tl.int64)
        kraw, ksc, kz = load_keys(k_ptr, ks_ptr, kz_ptr, blk, offs % BS, kvh, nmask, d, D, stride_kb, stride_kt,
                                  stride_kh, stride_ksb, stride_kst, stride_ksh, KV)
        vraw, vsc, vz = load_values(v_ptr, vs_ptr, vz_ptr, blk, offs % BS, kvh, nmask, dv, DV, stride_vb, stride_vt,
                                    stride_vh, stride_vsb, stride_vst, stride_vsh, KV)
        offs1 = offs + BLOCK_N
        blk1 = tl.load(bt_row + offs1 // BS, mask=offs1 < end, other=0)
        for n0 in range(start, end, BLOCK_N):
            offs = n0 + tl.arange(0, BLOCK_N)
            nmask = offs < end
            # The next tile's loads first, then the next-but-one's block-table entries.
            offs1 = offs + BLOCK_N
            nmask1 = offs1 < end
            blk1w = blk1.to(tl.int64)
            kraw1, ksc1, kz1 = load_keys(k_ptr, ks_ptr, kz_ptr, blk1w, offs1 % BS, kvh, nmask1, d, D, stride_kb,
                                         stride_kt, stride_kh, stride_ksb, stride_kst, stride_ksh, KV)
            vraw1, vsc1, vz1 = load_values(v_ptr, vs_ptr, vz_ptr, blk1w, offs1 % BS, kvh, nmask1, dv, DV, stride_vb,
                                           stride_vt, stride_vh, stride_vsb, stride_vst, stride_vsh, KV)
            offs2 = offs1 + BLOCK_N
            blk1 = tl.load(bt_row + offs2 // BS, mask=offs2 < end, other=0)
            sc = scores_from(q, qsum, kraw, ksc, kz, nmask, d, D, scale, soft_cap, KV, SOFTCAP, PREC, ASM)
            if ALIBI:
                sc = sc + slope[:, None] * (offs - qpos).to(tl.float32)[None, :]
            sc = tl.where(nmask[None, :], sc, float("-inf"))
            p, alpha, m_new, l_i = online_softmax(sc, m_i, l_i)
            acc = values_from(acc, alpha, q, p, vraw, vsc, vz, nmask, dv, DV, KV, PREC, ASM)
            m_i = m_new
            kraw, ksc, kz, vraw, vsc, vz = kraw1, ksc1, kz1, vraw1, vsc1, vz1
    else:
        # Block-table entries a tile ahead, carried in registers (PREFETCH 1): the K / V copies that
        # Triton's pipeliner issues for the next tile then need no load of their own first.  Loaded
        # whatever PREFETCH is: triton 3.6 wants every name the loop assigns defined before it, even
        # in a branch a constexpr leaves out.
        offs = start + tl.arange(0, BLOCK_N)
        blk_next = tl.load(bt_row + offs // BS, mask=offs < end, other=0)
        for n0 in range(start, end, BLOCK_N):
            offs = n0 + tl.arange(0, BLOCK_N)
            nmask = offs < end
            if PREFETCH == 1:
                blk = blk_next.to(tl.int64)
                offs1 = offs + BLOCK_N
                blk_next = tl.load(bt_row + offs1 // BS, mask=offs1 < end, other=0)
            else:
                blk = tl.load(bt_row + offs // BS, mask=nmask, other=0).to(tl.int64)
            tok = offs % BS
            sc = key_scores(q, qsum, k_ptr, ks_ptr, kz_ptr, blk, tok, kvh, nmask, d, D, stride_kb, stride_kt,
                            stride_kh, stride_ksb, stride_kst, stride_ksh, scale, soft_cap, KV, SOFTCAP, PREC, ASM)
            if ALIBI:
                sc = sc + slope[:, None] * (offs - qpos).to(tl.float32)[None, :]
            sc = tl.where(nmask[None, :], sc, float("-inf"))
            p, alpha, m_new, l_i = online_softmax(sc, m_i, l_i)
            acc = weighted_values(acc, alpha, q, p, v_ptr, vs_ptr, vz_ptr, blk, tok, kvh, nmask, dv, DV,
                                  stride_vb, stride_vt, stride_vh, stride_vsb, stride_vst, stride_vsh, KV, PREC, ASM)
            m_i = m_new

    if SPLIT:
        # Normalised partial output and its log2-sum-exp; an empty split has l = 0 -> lse = -inf.
        l_safe = tl.where(l_i == 0.0, 1.0, l_i)
        acc_store(po_ptr + t * stride_pt + heads[:, None] * stride_ph + s * stride_ps, acc, l_safe, hmask,
                  DV, BLOCK_DV, KV)
        lse = tl.where(l_i == 0.0, float("-inf"), m_i + tl.log2(l_safe))
        tl.store(plse_ptr + t * stride_lt + heads * stride_lh + s, lse, mask=hmask)
    else:
        if SINKS:
            # A sink is one more logit in the denominator, with no value.
            sk = tl.load(sinks_ptr + heads, mask=hmask, other=0.0) * 1.4426950408889634
            m_f = tl.maximum(m_i, sk)
            a = tl.exp2(m_i - m_f)
            acc = acc_scale(acc, a, KV)
            l_i = l_i * a + tl.exp2(sk - m_f)
        acc_store(o_ptr + t * stride_ot + heads[:, None] * stride_oh, acc, l_i, hmask, DV, BLOCK_DV, KV)


@triton.jit
def _merge_splits_kernel(po_ptr, plse_ptr, o_ptr, q_start_ptr, sinks_ptr,
                         stride_pt, stride_ph, stride_ps, stride_lt, stride_lh, stride_ot, stride_oh,
                         num_splits,
                         DV: tl.constexpr, BLOCK_S: tl.constexpr, BLOCK_DV: tl.constexpr, SINKS: tl.constexpr,
                         USE_PDL: tl.constexpr = False):
    pdl_enter(USE_PDL)
    b = tl.program_id(0)
    h = tl.program_id(1)
    t = tl.load(q_start_ptr + b).to(tl.int64)
    s = tl.arange(0, BLOCK_S)
    smask = s < num_splits
    dv = tl.arange(0, BLOCK_DV)
    lse = tl.load(plse_ptr + t * stride_lt + h * stride_lh + s, mask=smask, other=float("-inf"))
    m = tl.max(lse, axis=0)
    w = tl.exp2(lse - m)
    denom = tl.sum(w, axis=0)
    if SINKS:
        denom += tl.exp2(tl.load(sinks_ptr + h) * 1.4426950408889634 - m)
    po = tl.load(po_ptr + t * stride_pt + h * stride_ph + s[:, None] * stride_ps + dv[None, :],
                 mask=smask[:, None] & (dv < DV)[None, :], other=0.0)
    out = tl.sum(w[:, None] * po, axis=0) / denom
    tl.store(o_ptr + t * stride_ot + h * stride_oh + dv, out.to(o_ptr.dtype.element_ty), mask=dv < DV)


def decode_config(block_d: int, group: int, interp: bool, max_seq_len: int = 0,
                  kv_mode: int = 0) -> tuple[int, int, int]:
    """(BLOCK_N, BLOCK_H, num_warps).  A quantized cache (kv_mode > 0) takes 128-key tiles at head
    dims <= 128: an H200 sweep (bench_decode.py --tiles, batch 256 x 512 tokens, 2026-12-01) gave
    int8 176 -> 147 us, fp8 206 -> 197, int4 split4 167 -> 138 with 128 x 4 warps over 64 x 4,
    while the model dtype's cache is fastest at 64 x 4 (145 us, 87% of the copy bandwidth;
    128 x 4: 153).  The int4 4-plane tile then went to 64 x 2 warps (below)."""
    if interp:
        return (16 if max_seq_len <= 128 else 64), 16, 1
    block_n = 64 if block_d <= 128 else 32 if block_d <= 256 else 16
    warps = 4
    if kv_mode and block_d <= 128:
        block_n = 128
    if kv_mode == tl_math.KV_INT4_SPLIT4 and block_d <= 128:
        # 64 keys x 2 warps (H200, bench_decode.py --tiles, 2026-12-02, graph replay): batch 512 x 320
        # tokens 197.6 -> 176.0 us, 1,024 x 320 381.3 -> 340.7, 256 x 640 160.5 -> 159.4 (bf16's
        # cache: 172.6 / 332.8 / 166.7); more, smaller programs hide the unpacking's latency
        block_n, warps = 64, 2
    block_h = min(max(16, next_pow2(group)), 64 if block_d <= 128 else 16)
    if DECODE_TILE:
        block_n, warps = (int(x) for x in DECODE_TILE.lower().split("x"))
    return block_n, block_h, warps


def decode_prefetch(kv_mode: int) -> int:
    """The decode kernel's PREFETCH (tl_math.KV_PREFETCH): 0 none, 1 block-table entries a tile
    ahead, 2 whole tiles a tile ahead in registers."""
    want = tl_math.KV_PREFETCH
    if want < 0:
        # auto, from bench_decode.py --prefetch 0,1,2 on an H200 (batch 256 x 1,024 tokens,
        # 2026-12-01): bf16 250 / 274 / 310 us, int8 390 / 319 / 398, fp8 395 / 387 / 410,
        # int4 words 433 / 388 / 368, int4 4 planes 373 / 332 / 311
        return 0 if kv_mode == 0 else 2 if kv_mode >= tl_math.KV_INT4 else 1
    return want


def decode_stages(kv_mode: int, prefetch: int | None = None) -> int:
    """num_stages: 2 lets Triton's pipeliner copy the K/V tiles (and scales) into shared memory one
    tile ahead (cp.async); with the register prefetch (2) it is 1, the pipeliner off (the loads
    it would move are already a tile early).  HALINFER_DECODE_STAGES overrides it, for timing."""
    if DECODE_STAGES:
        return DECODE_STAGES
    if prefetch is None:
        prefetch = decode_prefetch(kv_mode)
    return 1 if prefetch == 2 else 2


def choose_num_splits(batch: int, programs_per_seq: int, max_seq_len: int, block_n: int, sms: int) -> int:
    """Enough programs for about two waves, never more splits than key tiles."""
    tiles = max(1, cdiv(max_seq_len, block_n))
    want = cdiv(2 * sms, max(1, batch * programs_per_seq))
    return max(1, min(want, tiles, MAX_SPLITS))


def paged_attention_decode(q: torch.Tensor, kv: LayerKV, meta: AttentionMetadata, *, scale: float,
                           sliding_window=None, chunk_size=None, soft_cap=None, alibi_slopes=None, sinks=None,
                           v_head_dim=None, num_splits: int | None = None, inline_ptx: bool = True) -> torch.Tensor:
    """core.ops.paged.paged_attention for a decode step (every q_len == 1).  inline_ptx=False: this
    Triton takes no PTX (attn_args)."""
    interp = on_interpreter(q)
    a = attn_args(q, kv, sliding_window=sliding_window, chunk_size=chunk_size, soft_cap=soft_cap,
                  alibi_slopes=alibi_slopes, sinks=sinks, v_head_dim=v_head_dim, inline_ptx=inline_ptx and not interp)
    B = meta.num_seqs
    T = a.q.shape[0]
    assert T == B, f"decode attention wants one token per sequence, got {T} tokens for {B} sequences"
    out = torch.empty((T, a.Hq, a.DV), dtype=q.dtype, device=q.device)
    if B == 0:
        return out
    kvm = a.kernel_kv_mode
    block_n, block_h, warps = decode_config(a.block_d, a.group, interp, meta.max_seq_len, kvm)
    block_h = min(block_h, max(16, next_pow2(a.group)))
    h_chunks = cdiv(a.group, block_h)
    if num_splits is None:
        num_splits = choose_num_splits(B, a.Hk * h_chunks, max(1, meta.max_seq_len), block_n, sm_count(q.device))
    split = num_splits > 1
    prefetch = decode_prefetch(kvm)
    pdl = launch_options(q)
    if split:
        po = torch.empty((T, a.Hq, num_splits, a.DV), dtype=torch.float32, device=q.device)
        plse = torch.empty((T, a.Hq, num_splits), dtype=torch.float32, device=q.device)
    else:
        po = plse = out  # unused
    _decode_kernel[(B, a.Hk * h_chunks, num_splits)](
        a.q, a.k, a.v, a.k_scale, a.v_scale, a.k_zero, a.v_zero, out, po, plse,
        meta.q_start_loc, meta.seq_lens, meta.block_tables, a.slopes, a.sinks,
        a.q.stride(0), a.q.stride(1), out.stride(0), out.stride(1),
        po.stride(0) if split else 0, po.stride(1) if split else 0, po.stride(2) if split else 0,
        plse.stride(0) if split else 0, plse.stride(1) if split else 0, meta.block_tables.stride(0),
        *a.cache_args(), float(scale), a.soft_cap, a.window, a.chunk, num_splits,
        **a.flags(), H_CHUNKS=h_chunks, BLOCK_H=block_h, BLOCK_N=block_n, SPLIT=split,
        PREC=dot_precision(q.dtype), PREFETCH=prefetch, num_warps=warps, num_stages=decode_stages(kvm, prefetch),
        **pdl)
    if split:
        _merge_splits_kernel[(B, a.Hq)](
            po, plse, out, meta.q_start_loc, a.sinks,
            po.stride(0), po.stride(1), po.stride(2), plse.stride(0), plse.stride(1), out.stride(0), out.stride(1),
            num_splits, DV=a.DV, BLOCK_S=next_pow2(num_splits), BLOCK_DV=a.block_dv,
            SINKS=a.sinks is not a.q, num_warps=4 if not interp else 1, **pdl)
    return out
