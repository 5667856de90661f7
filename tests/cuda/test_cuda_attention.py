"""paged_attention (Triton prefill and split-KV decode) vs the core reference.

Cases cover prefill from scratch, prefill over a cached prefix, decode, mixed
batches; GQA 1/3/4/8 and MQA; head dims 64/80/96/128/256; lengths on and around
block boundaries; sliding window, chunked attention, soft-cap, ALiBi, sinks,
MLA, int8 caches, non-causal, the HND layout and several block sizes.  Caches
are NaN wherever the step's sequences own nothing (tritonops_util).
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from halinfer.core.attention import MetadataBuilder, StepInputs
from halinfer.core.ops import Ops
from halinfer.models.alibi import alibi_slopes
from tritonops_util import assert_close, dirty, make_paged, ref

REF = Ops()


# id: (seqs as a function of the block size, Hq, Hk, D, options)
CASES = {
    "prefill_gqa1_d64": (lambda b: [(0, 1), (0, b - 1), (0, b), (0, b + 1), (0, 2 * b + 5)], 4, 4, 64, {}),
    "prefix_gqa4_d128": (lambda b: [(b, b), (2 * b - 1, 2), (2 * b + 1, b - 1)], 8, 2, 128, {}),
    "mixed_gqa8_d80": (lambda b: [(0, 5), (b - 1, 1), (2 * b, 9), (b, 1)], 16, 2, 80, {}),
    "mixed_gqa3_d96": (lambda b: [(b + 1, 1), (0, b + 2), (37, 20)], 6, 2, 96, {}),
    "prefill_d256": (lambda b: [(b, 7), (0, b + 3)], 4, 2, 256, {}),
    "decode_gqa8_d64": (lambda b: [(n - 1, 1) for n in (1, b - 1, b, b + 1, 2 * b, 5 * b + 3)], 16, 2, 64, {}),
    "decode_mqa_d96": (lambda b: [(n - 1, 1) for n in (2, b, 3 * b - 1, 77)], 8, 1, 96, {}),
    "decode_gqa4_d256": (lambda b: [(n - 1, 1) for n in (3, 2 * b + 1)], 8, 2, 256, {}),
    "decode_gqa1_d128": (lambda b: [(n - 1, 1) for n in (1, 40, b)], 4, 4, 128, {}),
    "window17_mixed": (lambda b: [(3 * b + 2, 20), (50, 1), (0, 40), (b, 1)], 8, 2, 64, {"sliding_window": 17}),
    "window16_decode": (lambda b: [(n - 1, 1) for n in (b, b + 1, 4 * b)], 4, 4, 64, {"sliding_window": 16}),
    "chunk32_mixed": (lambda b: [(30, 10), (64, 1), (0, 70), (31, 1)], 8, 2, 64, {"chunk_size": 32}),
    "chunk32_decode": (lambda b: [(n - 1, 1) for n in (31, 32, 33, 90)], 8, 2, 64, {"chunk_size": 32}),
    "softcap_mixed": (lambda b: [(b, 7), (2 * b, 1), (0, 9)], 8, 2, 128, {"soft_cap": 5.0, "q_scale": 4.0}),
    "softcap_decode": (lambda b: [(n - 1, 1) for n in (5, 2 * b + 3)], 8, 2, 128, {"soft_cap": 5.0, "q_scale": 4.0}),
    "alibi_mha": (lambda b: [(0, 21), (b + 3, 1), (b, b)], 12, 12, 64, {"alibi": True}),
    "alibi_gqa_decode": (lambda b: [(n - 1, 1) for n in (7, 2 * b + 5)], 8, 2, 64, {"alibi": True}),
    "sinks_mixed": (lambda b: [(b, 3), (2 * b + 1, 1), (0, 11)], 8, 2, 64, {"sinks": True}),
    "sinks_window_decode": (lambda b: [(n - 1, 1) for n in (3 * b, b + 1)], 8, 2, 64,
                            {"sinks": True, "sliding_window": 9}),
    "mla_mixed_d80_dv64": (lambda b: [(b, 4), (2 * b - 1, 1), (0, 6)], 8, 1, 80, {"mla": 64}),
    "mla_decode_d80_dv64": (lambda b: [(n - 1, 1) for n in (b, 2 * b + 1)], 16, 1, 80, {"mla": 64}),
    "v_dim_differs": (lambda b: [(b, 3), (5, 1)], 4, 2, 64, {"dv": 96}),
    "int8_mixed": (lambda b: [(b + 1, 3), (2 * b, 1), (0, b)], 8, 2, 128, {"int8": True}),
    "int8_decode": (lambda b: [(n - 1, 1) for n in (1, b + 1, 3 * b)], 8, 2, 64, {"int8": True}),
    "int8_mla": (lambda b: [(b - 1, 2), (b, 1)], 4, 1, 80, {"int8": True, "mla": 64}),
    "noncausal": (lambda b: [(0, 9), (0, b + 1)], 4, 2, 64, {"causal": False}),
    "hnd_mixed": (lambda b: [(b - 1, 3), (0, b + 2), (2 * b, 1)], 8, 2, 64, {"layout": "HND"}),
    "hnd_decode_int8": (lambda b: [(n - 1, 1) for n in (b, 2 * b + 3)], 8, 2, 64, {"layout": "HND", "int8": True}),
    "bs32_mixed": (lambda b: [(b + 1, 1), (0, 2 * b), (b - 1, b + 2)], 4, 4, 80, {"bs": 32}),
    "bs64_decode": (lambda b: [(n - 1, 1) for n in (63, 64, 65, 130)], 8, 2, 64, {"bs": 64}),
}


def run_case(target, ops, gen, seqs, hq, hk, d, opt, num_splits=None):
    dev, dt = target.device, target.dtype
    bs = opt.get("bs", 16)
    p = make_paged(seqs(bs), hk, d, bs, dt, dev, gen, dv=opt.get("dv"), mla=bool(opt.get("mla")),
                   int8=opt.get("int8", False), layout=opt.get("layout", "NHD"))
    q = (torch.randn(p.step.num_tokens, hq, d, generator=gen) * opt.get("q_scale", 1.0)).to(dev, dt)
    kw = dict(scale=1.0 / math.sqrt(d), causal=opt.get("causal", True), sliding_window=opt.get("sliding_window"),
              chunk_size=opt.get("chunk_size"), soft_cap=opt.get("soft_cap"), v_head_dim=opt.get("mla"))
    if opt.get("alibi"):
        kw["alibi_slopes"] = alibi_slopes(hq)
    if opt.get("sinks"):
        kw["sinks"] = torch.randn(hq, generator=gen) * 2
    dev_kw = {k: (v.to(dev) if isinstance(v, torch.Tensor) else v) for k, v in kw.items()}
    dv = opt.get("mla") or opt.get("dv") or d
    q0, k0 = q.clone(), p.kv.k.clone()
    dirty(dev, q.shape[0] * hq * dv * 4 * 8)
    meta = p.meta(dev)
    if num_splits is None:
        out = ops.paged_attention(q, p.kv, meta, **dev_kw)
    else:
        from halinfer.kernels.triton.attention_decode import paged_attention_decode

        kw_dec = {k: v for k, v in dev_kw.items() if k != "causal"}
        out = paged_attention_decode(q, p.kv, meta, num_splits=num_splits, **kw_dec)
    assert torch.equal(q, q0) and torch.equal(p.kv.k.nan_to_num(77), k0.nan_to_num(77)), "wrote into its inputs"
    assert out.dtype == dt and tuple(out.shape) == (q.shape[0], hq, dv)
    want = REF.paged_attention(ref(q), p.ref_kv(), p.meta("cpu"), **kw)
    assert torch.isfinite(want).all(), "the reference read poison: the case is wrong"
    assert_close(out, want, dt, factor=2, what="attention")
    return p, out


@pytest.mark.parametrize("name", list(CASES))
def test_paged_attention_matches_reference(target, ops, gen, name):
    seqs, hq, hk, d, opt = CASES[name]
    run_case(target, ops, gen, seqs, hq, hk, d, opt)


@pytest.mark.parametrize("num_splits", [1, 2, 3, 8])
@pytest.mark.parametrize("features", ["plain", "sinks_window", "alibi_softcap"])
def test_decode_any_split_count_gives_the_same_answer(target, ops, gen, num_splits, features):
    opt = {"plain": {}, "sinks_window": {"sinks": True, "sliding_window": 20},
           "alibi_softcap": {"alibi": True, "soft_cap": 4.0, "q_scale": 3.0}}[features]
    # More splits than a short sequence has tiles: the empty splits must merge away.
    seqs = lambda b: [(n - 1, 1) for n in (1, 17, 40, 100)]  # noqa: E731
    run_case(target, ops, gen, seqs, 8, 2, 64, opt, num_splits=num_splits)


def test_decode_is_graph_safe_under_padding_and_capacity_bounds(target, ops, gen):
    """What CapturedDecodeRunner does: pad the batch with (seq_len 1, table of zeros,
    slot -1) rows, widen the block table, set max_seq_len to capacity.  The real
    rows' results must not change."""
    dev, dt = target.device, target.dtype
    seqs = lambda b: [(n - 1, 1) for n in (5, 33, 70)]  # noqa: E731
    p, out = run_case(target, ops, gen, seqs, 8, 2, 64, {})
    st = p.step
    pad_to, width = 8, st.block_tables.shape[1] + 5
    tables = np.zeros((pad_to, width), np.int32)
    tables[:3, : st.block_tables.shape[1]] = st.block_tables
    seq_lens = np.ones(pad_to, np.int32)
    seq_lens[:3] = st.seq_lens
    slots = np.full(pad_to, -1, np.int64)
    slots[:3] = st.slot_mapping
    padded = StepInputs(np.ones(pad_to, np.int32), seq_lens, tables, slots, st.block_size)
    meta = MetadataBuilder(dev, st.block_size).build(padded)
    meta.max_seq_len = 4096
    q = torch.zeros(pad_to, 8, 64, dtype=dt, device=dev)
    q[:3] = ref_q = torch.randn(3, 8, 64, generator=gen).to(dev, dt)
    got = ops.paged_attention(q, p.kv, meta, scale=0.125)
    eager = ops.paged_attention(ref_q, p.kv, p.meta(dev), scale=0.125)
    assert_close(got[:3], ref(eager), dt, what="padded decode")
