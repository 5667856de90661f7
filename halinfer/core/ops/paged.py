"""Paged KV cache references: storing new keys/values and attention over the cache.

These follow the step semantics of core/attention.py: sequence i has q_lens[i] new
tokens at positions seq_lens[i]-q_lens[i] .. seq_lens[i]-1, and every key it may
attend to (its cached prefix and its new tokens) is in the cache when attention
runs, because store_kv runs first.
"""
from __future__ import annotations

import torch

from ..attention import AttentionMetadata, LayerKV


def _quantize_int8(x: torch.Tensor):
    """Symmetric per-(token, head) int8: scale = amax / 127 over the last dim."""
    scale = x.float().abs().amax(-1).clamp(min=1e-8) / 127.0
    q = torch.round(x.float() / scale[..., None]).clamp(-128, 127).to(torch.int8)
    return q, scale


def store_kv(k: torch.Tensor, v: torch.Tensor | None, kv: LayerKV, slot_mapping: torch.Tensor) -> None:
    """Write this step's keys/values into the cache, in place.

    k: [T, Hk, D], v: [T, Hk, Dv] or None (MLA).  slot_mapping: int64 [T], slot =
    block_id * block_size + offset; negative slots are skipped (graph padding).
    An int8 cache quantizes per (token, head) and stores the scale beside it.
    """
    valid = slot_mapping >= 0
    slots = slot_mapping[valid]
    bs = kv.block_size
    blk, off = slots // bs, slots % bs

    def put(cache, scales, x):
        x = x[valid]
        if scales is not None:
            x, s = _quantize_int8(x)
            if kv.layout == "NHD":
                scales[blk, off] = s
            else:
                scales[blk, :, off] = s
        if kv.layout == "NHD":
            cache[blk, off] = x.to(cache.dtype)
        else:
            cache[blk, :, off] = x.to(cache.dtype)

    put(kv.k, kv.k_scale, k)
    if kv.v is not None and v is not None:
        put(kv.v, kv.v_scale, v)


def gather_seq_kv(kv: LayerKV, cache: torch.Tensor, scales, blocks: torch.Tensor, n: int) -> torch.Tensor:
    """The first n tokens of one sequence from a cache, as float32 [n, Hk, D]."""
    x = cache.index_select(0, blocks)
    if kv.layout == "HND":
        x = x.transpose(1, 2)
    x = x.reshape(-1, *x.shape[2:])[:n].float()
    if scales is not None:
        s = scales.index_select(0, blocks)
        if kv.layout == "HND":
            s = s.transpose(1, 2)
        x = x * s.reshape(-1, s.shape[-1])[:n, :, None]
    return x


def attention_case(q, kv: LayerKV, layout: str, dtypes, unsupported: tuple[str, ...], *, sliding_window=None,
                   chunk_size=None, soft_cap=None, alibi_slopes=None, sinks=None, **_) -> str | None:
    """Why an override for model-dtype caches in ``layout`` and q in ``dtypes`` cannot take a
    paged_attention call, as a case name for its fallbacks, or None: the first feature present
    among ``unsupported`` ("sliding_window", "chunked", "soft_cap", "alibi", "sinks"), then
    kv_case, then q's dtype ("float32")."""
    present = {"sliding_window": bool(sliding_window), "chunked": bool(chunk_size), "soft_cap": bool(soft_cap),
               "alibi": alibi_slopes is not None, "sinks": sinks is not None}
    case = next((f for f in unsupported if present[f]), None) or kv_case(kv, layout)
    return case or (None if q.dtype in dtypes else str(q.dtype).replace("torch.", ""))


def kv_case(kv: LayerKV, layout: str) -> str | None:
    """What of a layer's cache an override for model-dtype k/v caches in ``layout`` cannot read:
    "mla" (one latent cache), "int8_kv", or the other layout's name; None when it can."""
    if kv.v is None:
        return "mla"
    if kv.quantized:
        return "int8_kv"
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
) -> torch.Tensor:
    """Attention of this step's queries over each sequence's cached keys.

    q: [T, Hq, D] (model dtype).  Hq must be a multiple of the cache's Hk (GQA/MQA);
    query head h reads kv head h // (Hq / Hk).
    Returns [T, Hq, Dv] in q's dtype, Dv = v_head_dim or the value cache's D.
    Masks, for a query at position p and a key at position j (both in the sequence):
      causal          j <= p
      sliding_window  p - j < sliding_window (the window counts the query itself)
      chunk_size      p // chunk_size == j // chunk_size (Llama 4 chunked attention)
    Score = scale * q.k; then soft_cap: cap * tanh(score / cap); then ALiBi:
    + slope[h] * (j - p).  sinks: float [Hq] logits that join each softmax
    denominator (gpt-oss) without a value.  MLA: kv.v is None and the values are
    the first v_head_dim channels of the key cache (all of them when v_head_dim is None).
    """
    T, Hq, D = q.shape
    hk = kv.k.shape[2] if kv.layout == "NHD" else kv.k.shape[1]
    group = Hq // hk
    dv = kv.v.shape[-1] if kv.v is not None else (v_head_dim or kv.k.shape[-1])  # MLA default: the whole latent
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
        k = gather_seq_kv(kv, kv.k, kv.k_scale, blocks, n)                  # [n, Hk, D]
        if kv.v is None:
            v = k[..., :dv]
        else:
            v = gather_seq_kv(kv, kv.v, kv.v_scale, blocks, n)
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
