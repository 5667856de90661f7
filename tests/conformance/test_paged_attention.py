"""paged_attention vs the reference: prefill over a cached prefix, decode, mixed
batches; GQA 1/4/8 and MQA; head dims 64-128; block-boundary lengths; sliding
window, chunked attention, soft-cap, ALiBi, sinks, MLA, int8 cache, non-causal.

The cache is poisoned (NaN, or int8 sentinel with NaN scales) everywhere but the
tokens the step's sequences own, and block tables are padded with a poisoned
block, so reading a slot a kernel does not own shows up as NaN.
"""
from __future__ import annotations

import math

import torch

from halinfer.core.attention import MetadataBuilder
from halinfer.core.ops import Ops
from halinfer.models.alibi import alibi_slopes

from .checks import assert_close, dirty_allocator, ref, same_bits
from .kvbuild import layer_kv, plan, poisoned_cache, quantize_int8, write_rows, write_scales
from .params import case, conformance

REF = Ops()


def _pa(name, seqs, hq, hk, d, bs=16, *, features=(), **kw):
    """seqs: function of the block size -> [(cached tokens, new tokens), ...]."""
    feats = tuple(features) + tuple(f for f in ("sliding_window", "chunk_size", "soft_cap", "alibi", "sinks")
                                    if kw.get(f)) + (("int8_kv",) if kw.get("int8") else ())
    feats += ("mla",) if kw.get("mla") else ()
    feats += ("noncausal",) if kw.get("causal") is False else ()
    feats += ("bidirectional",) if kw.get("bidir") else ()
    return case(name, seqs=seqs, Hq=hq, Hk=hk, D=d, bs=bs, features=feats, **kw)


PA_CASES = [
    _pa("prefill_gqa1_d64", lambda b: [(0, 1), (0, b - 1), (0, b), (0, b + 1), (0, 3 * b + 5)], 4, 4, 64),
    _pa("prefix_gqa4_d128", lambda b: [(b, b), (2 * b - 1, 2), (2 * b + 1, b - 1), (3 * b, 17)], 8, 2, 128),
    _pa("decode_gqa8_d64", lambda b: [(n - 1, 1) for n in (1, b - 1, b, b + 1, 2 * b, 5 * b + 3, 100)], 16, 2, 64),
    _pa("decode_mqa_d128", lambda b: [(n - 1, 1) for n in (2, b, 3 * b - 1, 77)], 8, 1, 128),
    _pa("mixed_gqa3_d96", lambda b: [(0, 5), (b - 1, 1), (2 * b, 9), (b, 1), (37, 40)], 12, 4, 96),
    _pa("mixed_gqa1_d80_bs32", lambda b: [(b + 1, 1), (0, 2 * b), (b - 1, b + 2)], 4, 4, 80, bs=32),
    _pa("prefill_1000_mqa", lambda b: [(0, 1000)], 4, 1, 64),
    _pa("window17", lambda b: [(3 * b + 2, 20), (50, 1), (0, 40), (b, 1)], 8, 2, 64, sliding_window=17),
    _pa("window_bs_decode", lambda b: [(n - 1, 1) for n in (b, b + 1, 4 * b)], 4, 4, 64, sliding_window=16),
    _pa("chunk32", lambda b: [(30, 10), (64, 1), (0, 70), (31, 1)], 8, 2, 64, chunk_size=32),
    _pa("softcap", lambda b: [(b, 7), (2 * b, 1), (0, 9)], 8, 2, 128, soft_cap=5.0, q_scale=4.0),
    _pa("alibi_h12", lambda b: [(0, 21), (b + 3, 1), (b, b)], 12, 12, 64, alibi=True),
    _pa("alibi_gqa", lambda b: [(2 * b, 5), (7, 1)], 8, 2, 64, alibi=True),
    _pa("sinks", lambda b: [(b, 3), (2 * b + 1, 1), (0, 11)], 8, 2, 64, sinks=True),
    _pa("sinks_window", lambda b: [(3 * b, 6), (b + 1, 1)], 8, 2, 64, sinks=True, sliding_window=9),
    _pa("mla_d80_dv64", lambda b: [(b, 4), (2 * b - 1, 1), (0, 6)], 8, 1, 80, mla=64),
    _pa("int8_mixed", lambda b: [(b + 1, 3), (2 * b, 1), (0, b)], 8, 2, 128, int8=True),
    _pa("int8_mla", lambda b: [(b - 1, 2), (b, 1)], 4, 1, 80, int8=True, mla=64),
    _pa("noncausal", lambda b: [(0, 9), (0, b + 1)], 4, 2, 64, causal=False),
    # Gemma 3's images: spans of keys seen both ways, reaching past the query and into the cached prefix
    _pa("bidir_spans", lambda b: [(0, 2 * b + 3), (b - 2, 9), (3, 1), (b + 1, b)], 8, 2, 64, bidir=True),
    _pa("bidir_window", lambda b: [(b, 2 * b + 1), (0, 19)], 8, 4, 128, bidir=True, sliding_window=7),
    # head size not a multiple of 16 (FIA's tiles): feature "d72" for providers that hand it elsewhere
    _pa("mixed_gqa2_d72", lambda b: [(b, 5), (b - 1, 1)], 4, 2, 72, features=("d72",)),
]


def _build(prov, dtype, case, gen):
    bs = prov.block_size(case.bs)
    p = plan(case.seqs(bs), bs, gen)
    dev, layout = prov.device, prov.kv_layout
    hk, d = case.Hk, case.D
    dv = case.get("mla") or d
    kc, ks = poisoned_cache(layout, p.num_blocks, bs, hk, d, dtype, dev, case.get("int8", False))
    vc, vs = (None, None) if case.get("mla") else poisoned_cache(layout, p.num_blocks, bs, hk, dv, dtype, dev,
                                                                 case.get("int8", False))
    for i in range(len(p.q_lens)):
        n, slots = p.seq_lens[i], p.seq_slots(i)
        for cache, scales, width in ((kc, ks, d), (vc, vs, dv)):
            if cache is None:
                continue
            x = torch.randn(n, hk, width, generator=gen).to(dtype)
            if scales is not None:
                x, s = quantize_int8(x)
                write_scales(scales, layout, slots, s, bs)
            write_rows(cache, layout, slots, x, bs)
    q = torch.randn(p.step.num_tokens, case.Hq, d, generator=gen) * case.get("q_scale", 1.0)
    return p, q.to(dev, dtype), layer_kv(kc, vc, layout, ks, vs)


def _kwargs(case, gen):
    kw = dict(scale=1.0 / math.sqrt(case.D), causal=case.get("causal", True),
              sliding_window=case.get("sliding_window"), chunk_size=case.get("chunk_size"),
              soft_cap=case.get("soft_cap"), v_head_dim=case.get("mla"))
    if case.get("alibi"):
        kw["alibi_slopes"] = alibi_slopes(case.Hq)
    if case.get("sinks"):
        kw["sinks"] = torch.randn(case.Hq, generator=gen) * 2
    return kw


def _to_reference_kv(kv):
    """The same cache contents, float32 (int8 kept) on the CPU, same layout."""
    k = kv.k.cpu() if kv.quantized else ref(kv.k)
    v = None if kv.v is None else (kv.v.cpu() if kv.quantized else ref(kv.v))
    return layer_kv(k, v, kv.layout, ref(kv.k_scale), ref(kv.v_scale))


def _spans(p) -> torch.Tensor:
    """int32 [T, 2]: in each sequence a span from 2 tokens before its new ones (or 0) to
    one short of its end (when it has 4+ new tokens), a second 2-token span at its start
    when long enough; tokens in neither get (0, 0)."""
    rows = []
    for m, n in zip(p.q_lens, p.seq_lens):
        c = n - m
        spans = [(max(0, c - 2), n - 1 if m > 3 else n)]
        if c == 0 and m > 8:
            spans = [(0, 2), (4, n - 1)]
        for pos in range(c, n):
            rows.append(next(((a, b) for a, b in spans if a <= pos < b), (0, 0)))
    return torch.tensor(rows, dtype=torch.int32).reshape(-1, 2)


@conformance("paged_attention", PA_CASES)
def test_paged_attention(prov, dtype, case, gen):
    p, q, kv = _build(prov, dtype, case, gen)
    kw = _kwargs(case, gen)
    if case.get("bidir"):
        kw["bidir_spans"] = _spans(p)
    meta = prov.metadata_builder(prov.device, p.block_size).build(p.step)
    dev_kw = {k: (v.to(prov.device) if isinstance(v, torch.Tensor) else v) for k, v in kw.items()}
    k_before, q_before = kv.k.clone(), q.clone()
    dv = case.get("mla") or case.D
    dirty_allocator(prov.device, q.shape[0] * q.shape[1] * dv * q.element_size())
    out = prov.ops.paged_attention(q, kv, meta, **dev_kw)
    assert same_bits(kv.k, k_before) and same_bits(q, q_before), "paged_attention wrote into its inputs"
    assert out.dtype == dtype and tuple(out.shape) == (q.shape[0], case.Hq, dv)

    rmeta = MetadataBuilder(torch.device("cpu"), p.block_size).build(p.step)
    expect = REF.paged_attention(ref(q), _to_reference_kv(kv), rmeta, **kw)
    assert torch.isfinite(expect).all(), "reference produced non-finite values: the case reads poison"
    assert_close(out, expect, dtype, factor=2, what="attention output")
