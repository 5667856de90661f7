"""Dequantize the cache blocks a prefill step reads, once, into a model-dtype copy.

The prefill kernel reads every key / value block once per query tile and per query head; over
an int4 cache each of those reads unpacks and rescales the tile again.  On an H200
(benchmarks/tune_prefill.py --kv int4,none, Llama-3-8B heads, 20 prompts of 400 tokens) that
made prefill attention 3.5x slower than over a bf16 cache (0.97 against 0.28 ms a layer).  For
a step whose new tokens are a large part of what it reads (fresh prompts), dequantizing the
step's blocks first (one read of the packed cache, one write of the copy) and running the
model-dtype kernel over the copy is cheaper.  The values are the cache's own (c * s + z, as
core.ops.kv_quant.dequantize_kv), rounded once to the model dtype.
"""
from __future__ import annotations

import os
from dataclasses import replace

import torch
import triton
import triton.language as tl

from halinfer.core.attention import AttentionMetadata, LayerKV

from .common import next_pow2
from .store_kv import KV_MODES, cache_strides, scale_strides

# Cache modes whose prefill goes through the copy (HALINFER_KV_PREFILL_DEQUANT: a comma list of
# int4 / int8 / fp8, "none", or "all").  int4 is the one timed faster so far.
_ENV = os.environ.get("HALINFER_KV_PREFILL_DEQUANT", "int4")
DEQUANT_MODES = {"int4", "int8", "fp8"} if _ENV == "all" else set(_ENV.split(",")) - {"none", ""}
# the copy is taken only when the step's new tokens are at least this share of the cached
# tokens it reads (decode rows in a mixed step read whole contexts for one query each) ...
MIN_NEW_SHARE = 0.25
# ... and the copy's keys + values stay under this many elements (128 MB of bf16).  The start-up
# memory profile (worker._profile_peak_memory, a model-dtype scratch cache) does not see the copy;
# it lives only during one layer's attention, when the MLP intermediates the profile's peak is
# made of (Llama-3-8B, 8,192 tokens: 470 MB) are not alive.
MAX_COPY_ELEMS = 64 * 2 ** 20


@triton.jit
def _dequant_one(src_ptr, s_ptr, z_ptr, dst_ptr, blk, i, h, D, stride_b, stride_t, stride_h,
                 stride_sb, stride_st, stride_sh, stride_db, stride_dt, stride_dh,
                 KV: tl.constexpr, BS: tl.constexpr, BLOCK_D: tl.constexpr):
    """Block blk, head h of one cache (BS tokens x D channels), c * s (+ z for int4) -> block i
    of dst in dst's dtype.  int4 bytes hold channel 2c in the low nibble, 2c + 1 in the high."""
    t = tl.arange(0, BS)
    srow = blk * stride_sb + t * stride_st + h * stride_sh
    sc = tl.load(s_ptr + srow)
    drow = i.to(tl.int64) * stride_db + t[:, None] * stride_dt + h * stride_dh
    ch = tl.arange(0, BLOCK_D)
    if KV == 3:
        c = tl.arange(0, BLOCK_D // 2)
        raw = tl.load(src_ptr + blk * stride_b + t[:, None] * stride_t + h * stride_h + c[None, :],
                      mask=(c < D // 2)[None, :], other=0).to(tl.int32)
        z = tl.load(z_ptr + srow)
        lo = (raw & 0xF).to(tl.float32) * sc[:, None] + z[:, None]
        hi = ((raw >> 4) & 0xF).to(tl.float32) * sc[:, None] + z[:, None]
        out = tl.reshape(tl.join(lo, hi), (BS, BLOCK_D))   # channel 2c + j
    else:
        x = tl.load(src_ptr + blk * stride_b + t[:, None] * stride_t + h * stride_h + ch[None, :],
                    mask=(ch < D)[None, :], other=0.0).to(tl.float32)
        out = x * sc[:, None]
    tl.store(dst_ptr + drow + ch[None, :], out.to(dst_ptr.dtype.element_ty), mask=(ch < D)[None, :])


@triton.jit
def _dequant_blocks_kernel(k_ptr, ks_ptr, kz_ptr, kd_ptr, v_ptr, vs_ptr, vz_ptr, vd_ptr, idx_ptr, lens_ptr,
                           width, DK, DV,
                           stride_kb, stride_kt, stride_kh, stride_vb, stride_vt, stride_vh,
                           stride_sb, stride_st, stride_sh,
                           stride_kdb, stride_kdt, stride_kdh, stride_vdb, stride_vdt, stride_vdh,
                           KV: tl.constexpr, BS: tl.constexpr, BLOCK_DK: tl.constexpr, BLOCK_DV: tl.constexpr,
                           HAS_LENS: tl.constexpr):
    """Grid (copy block i, head, 0 keys / 1 values).  HAS_LENS: idx is a block table of rows
    `width` wide and entries past sequence i // width's length are padding, left unwritten (the
    kernel that reads the copy never reaches them)."""
    i = tl.program_id(0)
    h = tl.program_id(1)
    if HAS_LENS:
        if (i % width) * BS >= tl.load(lens_ptr + i // width):
            return
    blk = tl.maximum(tl.load(idx_ptr + i), 0).to(tl.int64)   # padding (-1 or 0) would read block 0
    if tl.program_id(2) == 0:
        _dequant_one(k_ptr, ks_ptr, kz_ptr, kd_ptr, blk, i, h, DK, stride_kb, stride_kt, stride_kh,
                     stride_sb, stride_st, stride_sh, stride_kdb, stride_kdt, stride_kdh, KV, BS, BLOCK_DK)
    else:
        _dequant_one(v_ptr, vs_ptr, vz_ptr, vd_ptr, blk, i, h, DV, stride_vb, stride_vt, stride_vh,
                     stride_sb, stride_st, stride_sh, stride_vdb, stride_vdt, stride_vdh, KV, BS, BLOCK_DV)


def dequant_blocks(kv: LayerKV, blocks: torch.Tensor, dtype: torch.dtype, seq_lens: torch.Tensor | None = None
                   ) -> LayerKV:
    """The cache blocks `blocks` (int; flattened in order) dequantized into a new NHD model-dtype
    LayerKV of blocks.numel() blocks: block i of the copy is blocks[i] of kv.  seq_lens: blocks
    is a [B, width] block table and seq_lens[b] row b's length; blocks past it are left unset."""
    assert kv.quant in ("int4", "int8", "fp8") and kv.v is not None, "dequant_blocks: a quantized K/V cache"
    assert kv.k_scale.stride() == kv.v_scale.stride(), "dequant_blocks: K and V scales laid out alike"
    idx = blocks.reshape(-1).to(torch.int32).contiguous()
    n = idx.numel()
    bs = kv.block_size
    hk = kv.k.shape[2] if kv.layout == "NHD" else kv.k.shape[1]
    dk, dv = (c.shape[-1] * (2 if kv.quant == "int4" else 1) for c in (kv.k, kv.v))
    kd = torch.empty((n, bs, hk, dk), dtype=dtype, device=kv.k.device)
    vd = torch.empty((n, bs, hk, dv), dtype=dtype, device=kv.k.device)
    if n:
        lens = idx if seq_lens is None else seq_lens
        _dequant_blocks_kernel[(n, hk, 2)](
            kv.k, kv.k_scale, kv.k_scale if kv.k_zero is None else kv.k_zero, kd,
            kv.v, kv.v_scale, kv.v_scale if kv.v_zero is None else kv.v_zero, vd, idx, lens,
            blocks.shape[-1] if seq_lens is not None else 1, dk, dv,
            *cache_strides(kv, kv.k), *cache_strides(kv, kv.v), *scale_strides(kv, kv.k_scale),
            *kd.stride()[:3], *vd.stride()[:3], KV=KV_MODES[kv.quant], BS=bs,
            BLOCK_DK=max(16, next_pow2(dk)), BLOCK_DV=max(16, next_pow2(dv)), HAS_LENS=seq_lens is not None,
            num_warps=4)
    return LayerKV(kd, vd, "NHD")


def prefill_copy(q: torch.Tensor, kv: LayerKV, meta: AttentionMetadata):
    """(kv, meta) for the prefill kernel: a model-dtype copy of the step's blocks with the block
    tables renumbered to it when the cache mode is in DEQUANT_MODES and the step is mostly new
    tokens (MIN_NEW_SHARE, MAX_COPY_ELEMS); else the arguments unchanged."""
    bs = kv.block_size
    if kv.quant not in DEQUANT_MODES or kv.v is None or meta.num_seqs == 0 or bs & (bs - 1):
        return kv, meta
    tables = meta.block_tables[:meta.num_seqs]
    read = tables.numel() * bs            # tokens the copy would hold (the tables' width bounds it)
    per_token = (kv.k[0].numel() + kv.v[0].numel()) // bs * (2 if kv.quant == "int4" else 1)
    if q.shape[0] < MIN_NEW_SHARE * read or read * per_token > MAX_COPY_ELEMS:
        return kv, meta
    copy = dequant_blocks(kv, tables, q.dtype, meta.seq_lens[:meta.num_seqs])
    renum = torch.arange(tables.numel(), device=tables.device, dtype=torch.int32).view(tables.shape)
    return copy, replace(meta, block_tables=renum)
