"""CPU operators: the core reference, plus a batched decode attention.

The reference attends sequence by sequence, which is clear but slow for a decode
step of many sequences; here a pure-decode step gathers every sequence's keys
into one padded batch and attends at once.  Everything else is the reference.
"""
from __future__ import annotations

import torch

from halinfer.core.ops import Ops
from halinfer.core.ops.kv_quant import dequantize_kv


def _gather(cache: torch.Tensor, scales, tables: torch.Tensor, layout: str, zeros=None, quant=None) -> torch.Tensor:
    """[B, W*bs, H, D] float32 from a paged cache (any KV quantization) and block tables [B, W]."""
    def tokens(t):
        t = t[tables.long()]                                   # [B, W, bs, H, ...] (NHD) or [B, W, H, bs, ...]
        if layout == "HND":
            t = t.transpose(2, 3)
        return t.reshape(t.shape[0], t.shape[1] * t.shape[2], *t.shape[3:])

    return dequantize_kv(tokens(cache), None if scales is None else tokens(scales),
                         None if zeros is None else tokens(zeros), quant)


class CpuOps(Ops):
    fallbacks = {"paged_attention": ("prefill",)}   # the batched path is decode-only

    def paged_attention(self, q, kv, meta, *, scale, causal=True, sliding_window=None, chunk_size=None,
                        soft_cap=None, alibi_slopes=None, sinks=None, v_head_dim=None, bidir_spans=None):
        # bidirectional spans (Gemma 3's images) only come with prefill chunks
        if not meta.is_decode or meta.num_seqs == 0 or bidir_spans is not None:
            return self.reference("paged_attention", "prefill", q, kv, meta, scale=scale, causal=causal,
                                  sliding_window=sliding_window, chunk_size=chunk_size, soft_cap=soft_cap,
                                  alibi_slopes=alibi_slopes, sinks=sinks, v_head_dim=v_head_dim,
                                  bidir_spans=bidir_spans)
        B, Hq, D = q.shape
        W = -(-meta.max_seq_len // kv.block_size)
        tables = meta.block_tables[:, :W]
        k = _gather(kv.k, kv.k_scale, tables, kv.layout, kv.k_zero, kv.quant)          # [B, L, Hk, D]
        v = k[..., :v_head_dim] if kv.v is None else _gather(kv.v, kv.v_scale, tables, kv.layout, kv.v_zero,
                                                             kv.quant)
        hk = k.shape[2]
        qg = q.float().view(B, hk, Hq // hk, D)
        scores = torch.einsum("bhgd,blhd->bhgl", qg, k) * scale    # [B, Hk, G, L]
        if soft_cap:
            scores = soft_cap * torch.tanh(scores / soft_cap)
        L = k.shape[1]
        kpos = torch.arange(L)[None, :]
        qpos = (meta.seq_lens.long() - 1)[:, None]                 # the query is the last token
        if alibi_slopes is not None:
            bias = alibi_slopes.float().view(hk, Hq // hk)[None, :, :, None] * (kpos - qpos)[:, None, None, :]
            scores = scores + bias
        allowed = kpos <= qpos
        if sliding_window:
            allowed &= (qpos - kpos) < sliding_window
        if chunk_size:
            allowed &= (qpos // chunk_size) == (kpos // chunk_size)
        scores = scores.masked_fill(~allowed[:, None, None, :], float("-inf"))
        # Slots past a sequence's length hold whatever the cache held (NaN included):
        # a zero weight does not cancel a NaN value, so zero those values.
        v = v.masked_fill(~allowed[:, :, None, None], 0.0)
        if sinks is not None:
            sink = sinks.float().view(1, hk, Hq // hk, 1).expand(B, -1, -1, 1)
            probs = torch.softmax(torch.cat((scores, sink), dim=-1), dim=-1)[..., :-1]
        else:
            probs = torch.softmax(scores, dim=-1)
        out = torch.einsum("bhgl,blhd->bhgd", probs, v)
        return out.reshape(B, Hq, -1).to(q.dtype)
