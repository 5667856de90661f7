"""Paged KV cache references: storing new keys/values and attention over the cache.

These follow the step semantics of core/attention.py: sequence i has q_lens[i] new
tokens at positions seq_lens[i]-q_lens[i] .. seq_lens[i]-1, and every key it may
attend to (its cached prefix and its new tokens) is in the cache when attention
runs, because store_kv runs first.
"""
from __future__ import annotations

import torch

from ..attention import AttentionMetadata, LayerKV
from .kv_quant import dequantize_kv, quantize_kv


def rotary_store_kv(ops, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor | None, positions: torch.Tensor,
                    cos_sin_cache: torch.Tensor, is_neox: bool, kv: LayerKV, slot_mapping: torch.Tensor) -> torch.Tensor:
    """Rotary of q and k, then store_kv of the rotated k and of v: returns the rotated q.

    The arguments are ``ops.rotary``'s and ``ops.store_kv``'s; the contract is that
    composition through the table ``ops`` (the rotated k exists only in the cache).  One op
    so that a backend can do both in one launch: at decode a layer's rotary is a launch of
    its own, a few microseconds of latency for a few kilobytes of work.
    """
    q, k = ops.rotary(q, k, positions, cos_sin_cache, is_neox)
    ops.store_kv(k, v, kv, slot_mapping)
    return q


def store_kv(k: torch.Tensor, v: torch.Tensor | None, kv: LayerKV, slot_mapping: torch.Tensor) -> None:
    """Write this step's keys/values into the cache, in place.

    k: [T, Hk, D], v: [T, Hk, Dv] or None (MLA).  slot_mapping: int64 [T], slot =
    block_id * block_size + offset; negative slots are skipped (graph padding).
    A quantized cache (kv.quant: int8, fp8, int4; see kv_quant.py) quantizes per
    (token, head) and stores the scale (and int4 zero) beside it.
    """
    valid = slot_mapping >= 0
    slots = slot_mapping[valid]
    bs = kv.block_size
    blk, off = slots // bs, slots % bs

    def write(dst, x):
        if kv.layout == "NHD":
            dst[blk, off] = x.to(dst.dtype)
        else:
            dst[blk, :, off] = x.to(dst.dtype)

    def put(cache, scales, zeros, x):
        x = x[valid]
        if kv.quant is not None:
            x, s, z = quantize_kv(x, kv.quant)
            write(scales, s)
            if zeros is not None:
                write(zeros, z)
        write(cache, x)

    put(kv.k, kv.k_scale, kv.k_zero, k)
    if kv.v is not None and v is not None:
        put(kv.v, kv.v_scale, kv.v_zero, v)


def gather_seq_kv(kv: LayerKV, cache: torch.Tensor, scales, blocks: torch.Tensor, n: int,
                  zeros=None) -> torch.Tensor:
    """The first n tokens of one sequence from a cache, as float32 [n, Hk, D]."""
    def tokens(t):
        t = t.index_select(0, blocks)
        if kv.layout == "HND":
            t = t.transpose(1, 2)
        return t.reshape(-1, *t.shape[2:])[:n]

    return dequantize_kv(tokens(cache), None if scales is None else tokens(scales),
                         None if zeros is None else tokens(zeros), kv.quant)


def attention_case(q, kv: LayerKV, layout: str, dtypes, unsupported: tuple[str, ...], *, sliding_window=None,
                   chunk_size=None, soft_cap=None, alibi_slopes=None, sinks=None, bidir_spans=None,
                   **_) -> str | None:
    """Why an override for model-dtype caches in ``layout`` and q in ``dtypes`` cannot take a
    paged_attention call, as a case name for its fallbacks, or None: the first feature present
    among ``unsupported`` ("sliding_window", "chunked", "soft_cap", "alibi", "sinks",
    "bidirectional"), then
    kv_case, then q's dtype ("float32")."""
    present = {"sliding_window": bool(sliding_window), "chunked": bool(chunk_size), "soft_cap": bool(soft_cap),
               "alibi": alibi_slopes is not None, "sinks": sinks is not None,
               "bidirectional": bidir_spans is not None}
    case = next((f for f in unsupported if present[f]), None) or kv_case(kv, layout)
    return case or (None if q.dtype in dtypes else str(q.dtype).replace("torch.", ""))


def kv_case(kv: LayerKV, layout: str) -> str | None:
    """What of a layer's cache an override for model-dtype k/v caches in ``layout`` cannot read:
    "mla" (one latent cache), "int8_kv" / "fp8_kv" / "int4_kv", or the other layout's name;
    None when it can."""
    if kv.v is None:
        return "mla"
    if kv.quantized:
        return f"{kv.quant}_kv"
    return kv.layout if kv.layout != layout else None


def paged_attention(
    q: torch.Tensor,
    kv: LayerKV,
    meta: AttentionMetadata,
    *,
    scale: float,
    causal: bool = True,
    sliding_window: int | None = None,
    chunk_size: int | None = None,
    soft_cap: float | None = None,
    alibi_slopes: torch.Tensor | None = None,
    sinks: torch.Tensor | None = None,
    v_head_dim: int | None = None,
    bidir_spans: torch.Tensor | None = None,
) -> torch.Tensor:
    """Attention of this step's queries over each sequence's cached keys.

    q: [T, Hq, D] (model dtype).  Hq must be a multiple of the cache's Hk (GQA/MQA);
    query head h reads kv head h // (Hq / Hk).
    Returns [T, Hq, Dv] in q's dtype, Dv = v_head_dim or the value cache's D.
    Masks, for a query at position p and a key at position j (both in the sequence):
      causal          j <= p
      sliding_window  p - j < sliding_window (the window counts the query itself)
      chunk_size      p // chunk_size == j // chunk_size (Llama 4 chunked attention)
      bidir_spans     int32 [T, 2]: query t also sees keys j with start_t <= j < end_t
                      (start_t = end_t: none), i.e. (causal or span) and window and chunk,
                      as transformers composes them; Gemma 3's image tokens see their whole
                      image.  The span must lie inside the sequence's KV (seq_lens).
    Score = scale * q.k; then soft_cap: cap * tanh(score / cap); then ALiBi:
    + slope[h] * (j - p).  sinks: float [Hq] logits that join each softmax
    denominator (gpt-oss) without a value.  MLA: kv.v is None and the values are
    the first v_head_dim channels of the key cache (all of them when v_head_dim is None).
    """
    T, Hq, D = q.shape
    hk = kv.k.shape[2] if kv.layout == "NHD" else kv.k.shape[1]
    group = Hq // hk
    pack = 2 if kv.quant == "int4" else 1
    dv = kv.v.shape[-1] * pack if kv.v is not None else (v_head_dim or kv.head_dim)  # MLA default: the whole latent
    out = torch.empty(T, Hq, dv, dtype=q.dtype, device=q.device)
    bs = kv.block_size
    q_start = meta.q_start_loc.tolist()
    seq_lens = meta.seq_lens.tolist()
    for i in range(meta.num_seqs):
        s, e = q_start[i], q_start[i + 1]
        n = seq_lens[i]
        if e == s:
            continue
        blocks = meta.block_tables[i, : (n + bs - 1) // bs].long()
        k = gather_seq_kv(kv, kv.k, kv.k_scale, blocks, n, kv.k_zero)       # [n, Hk, D]
        if kv.v is None:
            v = k[..., :dv]
        else:
            v = gather_seq_kv(kv, kv.v, kv.v_scale, blocks, n, kv.v_zero)
        qi = q[s:e].float()                                                 # [m, Hq, D]
        m = e - s
        k = k.repeat_interleave(group, dim=1)                               # [n, Hq, D]
        v = v.repeat_interleave(group, dim=1)
        scores = torch.einsum("mhd,nhd->hmn", qi, k) * scale                # [Hq, m, n]
        if soft_cap:
            scores = soft_cap * torch.tanh(scores / soft_cap)
        qpos = torch.arange(n - m, n, device=q.device)[:, None]
        kpos = torch.arange(n, device=q.device)[None, :]
        if alibi_slopes is not None:
            scores = scores + alibi_slopes.float().to(q.device)[:, None, None] * (kpos - qpos)
        allowed = torch.ones(m, n, dtype=torch.bool, device=q.device)
        if causal:
            allowed &= kpos <= qpos
            if bidir_spans is not None:
                sp = bidir_spans[s:e].long().to(q.device)
                allowed |= (kpos >= sp[:, :1]) & (kpos < sp[:, 1:])
        if sliding_window:
            allowed &= (qpos - kpos) < sliding_window
        if chunk_size:
            allowed &= (qpos // chunk_size) == (kpos // chunk_size)
        scores = scores.masked_fill(~allowed, float("-inf"))
        if sinks is not None:
            sink = sinks.float().to(q.device)[:, None, None].expand(Hq, m, 1)
            probs = torch.softmax(torch.cat((scores, sink), dim=-1), dim=-1)[..., :-1]
        else:
            probs = torch.softmax(scores, dim=-1)
        out[s:e] = torch.einsum("hmn,nhd->mhd", probs, v).to(q.dtype)
    return out
