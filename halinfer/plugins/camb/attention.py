"""Paged attention through torch_mlu_ops (vendors/camb.md §3), HND caches, block 16.

Decode: ``single_query_cached_kv_attn`` with the query as (B, 1, Hq, D), KV
lengths from a device tensor and ``max_context_len`` an upper bound (the graph
runner gives capacity).  Prefill / mixed: paged ``flash_attention`` with
cumulative query and KV lengths, causal bottom-right.  Both take a left window
(keys kept = window_size_left + 1).  ALiBi, soft-cap, sinks, chunked attention
and MLA are not wired (their TMO semantics are not documented enough); for those,
and for the shapes below, ``__call__`` returns the case name (a str) and CambOps
runs the core reference (declared in its fallbacks).
"""
from __future__ import annotations

import torch

# §3: single_query_cached_kv_attn must be split into head groups when
# seq_q * (Hq / Hkv) exceeds this (256 for a bfloat16 cache); not done here.
DECODE_GROUP_LIMIT = 128


class TmoAttention:
    def __init__(self, tmo):
        self.tmo = tmo

    def __call__(self, q, kv, meta, scale: float, causal: bool, window: int | None):
        T, hq, d = q.shape
        hk, dv = kv.k.shape[1], kv.v.shape[-1]
        if d != dv:
            return "mixed_head_dims"
        left = (window - 1) if window else -1
        if meta.is_decode and T == meta.num_seqs:
            if hq // hk > DECODE_GROUP_LIMIT:
                return "gqa_ratio"
            out = torch.empty(T, 1, hq, dv, dtype=q.dtype, device=q.device)
            self.tmo.single_query_cached_kv_attn(
                q.contiguous().view(T, 1, hq, d), kv.k, kv.v, out, meta.block_tables, meta.seq_lens,
                None, None, None, meta.max_seq_len, left, -1, scale)
            return out.view(T, hq, dv)
        out = torch.empty(T, hq, dv, dtype=q.dtype, device=q.device)   # never aliases q (§10)
        return self.tmo.flash_attention(
            q.contiguous(), kv.k, kv.v, out, meta.q_start_loc, meta.cu_seqlens_kv, None, None,
            meta.max_q_len, meta.max_seq_len, scale, causal, left, -1, torch.float, False,
            block_tables=meta.block_tables)
