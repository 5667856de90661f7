"""Emulated MetaX flash_attn: flash_attn_with_kvcache over a paged cache (vendors/maca.md §3, §4).

Argument meanings are FlashAttention-2 (2.6)'s API, which MetaX's port keeps
(flash_attn==2.6.3+metax...): cache_seqlens is the full KV length incl. the new
token, causal is bottom-right aligned, window_size=(left, right) with -1 for
unbounded, softcap 0 = off, ALiBi adds -slope * |i + seqlen_k - seqlen_q - j|.
MetaX's paged KV takes block sizes that are multiples of 16 (§3)."""
from __future__ import annotations

import math

import torch

from ..attn_math import attend_one, gather_paged
from ..checks import FLOAT16S, host_float, require, tensor
from ..graph_tape import vendor_op

OP = "flash_attn_with_kvcache"


@vendor_op(OP)
def flash_attn_with_kvcache(q, k_cache, v_cache, k=None, v=None, rotary_cos=None, rotary_sin=None,
                            cache_seqlens=None, cache_batch_idx=None, cache_leftpad=None, block_table=None,
                            softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0,
                            rotary_interleaved=True, alibi_slopes=None, num_splits=0, return_softmax_lse=False):
    """§4: decode over a paged NHD cache: q [B, 1, H, D] -> [B, 1, H, Dv]; block_table and
    cache_seqlens int32 device tensors (the full KV length, new token included)."""
    tensor(OP, "q", q, FLOAT16S, ndim=4)
    require(q.stride(-1) == 1, OP, "q's last dimension must be contiguous")
    require(k is None and v is None and rotary_cos is None and cache_batch_idx is None and cache_leftpad is None
            and not return_softmax_lse, OP, "appending k/v, rotary, batch index, left pad, lse: not emulated")
    tensor(OP, "k_cache", k_cache, (q.dtype,), ndim=4)
    tensor(OP, "v_cache", v_cache, (q.dtype,), ndim=4)
    tensor(OP, "block_table", block_table, (torch.int32,), ndim=2)
    tensor(OP, "cache_seqlens", cache_seqlens, (torch.int32,), ndim=1)
    B, sq, h, d = q.shape
    nb, bs, hk, kd = k_cache.shape
    require(bs % 16 == 0 and bs <= 256, OP, f"paged KV block size {bs}: multiples of 16 up to 256")
    require(d == kd and d % 8 == 0 and d <= 512 and h % hk == 0, OP, "head dims / head counts do not fit")
    scale = 1.0 / math.sqrt(d) if softmax_scale is None else host_float(OP, "softmax_scale", softmax_scale)
    left, right = window_size
    require(right in (-1, 0), OP, "right windows not emulated")
    cap = host_float(OP, "softcap", softcap)
    if alibi_slopes is not None:
        tensor(OP, "alibi_slopes", alibi_slopes, (torch.float32,), ndim=1)
    lens = cache_seqlens.tolist()
    out = torch.empty(B, sq, h, v_cache.shape[-1], dtype=q.dtype, device=q.device)
    for b in range(B):
        kk = gather_paged(k_cache, block_table[b], lens[b], bs, "NHD")
        vv = gather_paged(v_cache, block_table[b], lens[b], bs, "NHD")
        out[b] = attend_one(q[b], kk, vv, scale, causal=bool(causal), window_left=int(left), softcap=cap,
                            alibi=alibi_slopes).to(q.dtype)
    return out
