"""Independent checks of the reference paged_attention itself: against torch's
scaled_dot_product_attention and a float64 per-row loop on contiguous copies of
each sequence, and layout / int8 / MLA equivalences."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from halinfer.core.attention import MetadataBuilder
from halinfer.core.ops import Ops
from halinfer.models.alibi import alibi_slopes

from .kvbuild import layer_kv, plan, poisoned_cache, quantize_int8, write_rows, write_scales

REF = Ops()
CPU = torch.device("cpu")
BS = 16
SEQS = [(0, 7), (BS - 1, 1), (BS, BS + 1), (2 * BS + 3, 5), (40, 1)]


def _setup(seqs, hq, hk, d, dv, layout="NHD", int8=False, mla=False, seed=0):
    """A cache holding per-sequence K/V, the queries, and contiguous float64 copies."""
    g = torch.Generator().manual_seed(seed)
    p = plan(seqs, BS, g)
    kc, ks = poisoned_cache(layout, p.num_blocks, BS, hk, d, torch.float32, CPU, int8)
    vc, vs = (None, None) if mla else poisoned_cache(layout, p.num_blocks, BS, hk, dv, torch.float32, CPU, int8)
    ks_list, vs_list = [], []
    for i in range(len(seqs)):
        slots = p.seq_slots(i)
        dense = []
        for cache, scales, width in ((kc, ks, d), (vc, vs, dv)):
            if cache is None:
                dense.append(dense[0][..., :dv])
                continue
            x = torch.randn(p.seq_lens[i], hk, width, generator=g)
            if int8:
                x, s = quantize_int8(x)
                write_scales(scales, layout, slots, s, BS)
                dense.append(x.double() * s.double()[..., None])
            else:
                dense.append(x.double())
            write_rows(cache, layout, slots, x, BS)
        ks_list.append(dense[0])
        vs_list.append(dense[1])
    q = torch.randn(p.step.num_tokens, hq, d, generator=g)
    meta = MetadataBuilder(CPU, BS).build(p.step)
    return p, q, layer_kv(kc, vc, layout, ks, vs), meta, ks_list, vs_list


def _per_seq(p, q):
    start = 0
    for i, m in enumerate(p.q_lens):
        yield i, start, q[start:start + m]
        start += m


def _dense_loop(q, k, v, *, scale, causal=True, window=None, chunk=None, cap=None, slopes=None, sinks=None):
    """float64, one (head, query row) at a time: the definition, spelled out."""
    m, hq, _ = q.shape
    n, hk, _ = k.shape
    out = torch.zeros(m, hq, v.shape[-1], dtype=torch.float64)
    for h in range(hq):
        kv_h = h // (hq // hk)
        for r in range(m):
            pos = n - m + r
            j = torch.arange(n)
            s = (k[:, kv_h] @ q[r, h].double()) * scale
            if cap:
                s = cap * torch.tanh(s / cap)
            if slopes is not None:
                s = s + float(slopes[h]) * (j - pos)
            ok = torch.ones(n, dtype=torch.bool)
            if causal:
                ok &= j <= pos
            if window:
                ok &= pos - j < window
            if chunk:
                ok &= (j // chunk) == (pos // chunk)
            s = s[ok]
            w = torch.exp(s - s.max())
            denom = w.sum() + (math.exp(float(sinks[h]) - float(s.max())) if sinks is not None else 0.0)
            out[r, h] = (w[:, None] * v[ok, kv_h]).sum(0) / denom
    return out


@pytest.mark.parametrize("hq,hk", [(4, 4), (8, 2), (16, 2), (8, 1)], ids=["gqa1", "gqa4", "gqa8", "mqa"])
def test_reference_matches_sdpa(hq, hk):
    p, q, kv, meta, ks, vs = _setup(SEQS, hq, hk, 64, 64, seed=hq * 10 + hk)
    out = REF.paged_attention(q, kv, meta, scale=0.125)
    for i, s, qi in _per_seq(p, q):
        n, m = p.seq_lens[i], p.q_lens[i]
        allowed = torch.arange(n)[None, :] <= torch.arange(n - m, n)[:, None]   # causal, bottom-right aligned
        rep = hq // hk
        want = F.scaled_dot_product_attention(
            qi.double().transpose(0, 1), ks[i].repeat_interleave(rep, 1).transpose(0, 1),
            vs[i].repeat_interleave(rep, 1).transpose(0, 1), attn_mask=allowed, scale=0.125).transpose(0, 1)
        torch.testing.assert_close(out[s:s + m].double(), want, atol=1e-5, rtol=1e-5)


def test_reference_alibi_and_window_match_sdpa_with_a_float_mask():
    hq = 6
    p, q, kv, meta, ks, vs = _setup(SEQS, hq, 3, 64, 64, seed=7)
    slopes = alibi_slopes(hq)
    out = REF.paged_attention(q, kv, meta, scale=0.125, alibi_slopes=slopes, sliding_window=10)
    for i, s, qi in _per_seq(p, q):
        n, m = p.seq_lens[i], p.q_lens[i]
        j, pos = torch.arange(n)[None, :], torch.arange(n - m, n)[:, None]
        bias = slopes.double()[:, None, None] * (j - pos)
        bias = bias.masked_fill(~((j <= pos) & (pos - j < 10)), float("-inf"))
        want = F.scaled_dot_product_attention(
            qi.double().transpose(0, 1), ks[i].repeat_interleave(2, 1).transpose(0, 1),
            vs[i].repeat_interleave(2, 1).transpose(0, 1), attn_mask=bias, scale=0.125).transpose(0, 1)
        torch.testing.assert_close(out[s:s + m].double(), want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("opts", [
    dict(causal=False), dict(window=5), dict(chunk=16), dict(cap=2.0), dict(sinks=True), dict(alibi=True),
    dict(window=9, sinks=True, cap=3.0),
], ids=lambda o: "_".join(o))
def test_reference_matches_a_float64_loop(opts):
    hq, hk = 4, 2
    p, q, kv, meta, ks, vs = _setup(SEQS, hq, hk, 32, 32, seed=len(opts))
    q = q * 3  # large scores so the soft-cap matters
    g = torch.Generator().manual_seed(11)
    sinks = torch.randn(hq, generator=g) if opts.get("sinks") else None
    slopes = alibi_slopes(hq) if opts.get("alibi") else None
    out = REF.paged_attention(q, kv, meta, scale=0.2, causal=opts.get("causal", True),
                              sliding_window=opts.get("window"), chunk_size=opts.get("chunk"),
                              soft_cap=opts.get("cap"), alibi_slopes=slopes, sinks=sinks)
    for i, s, qi in _per_seq(p, q):
        want = _dense_loop(qi, ks[i], vs[i], scale=0.2, causal=opts.get("causal", True), window=opts.get("window"),
                           chunk=opts.get("chunk"), cap=opts.get("cap"), slopes=slopes, sinks=sinks)
        torch.testing.assert_close(out[s:s + qi.shape[0]].double(), want, atol=1e-5, rtol=1e-5)


def test_reference_mla_reads_values_from_the_latent_cache():
    p, q, kv, meta, ks, vs = _setup(SEQS, 4, 1, 48, 32, mla=True, seed=3)
    out = REF.paged_attention(q, kv, meta, scale=0.15, v_head_dim=32)
    assert out.shape == (q.shape[0], 4, 32)
    for i, s, qi in _per_seq(p, q):
        want = _dense_loop(qi, ks[i], ks[i][..., :32], scale=0.15)
        torch.testing.assert_close(out[s:s + qi.shape[0]].double(), want, atol=1e-5, rtol=1e-5)


def test_reference_int8_cache_is_dequantized_per_token_and_head():
    p, q, kv, meta, ks, vs = _setup(SEQS, 8, 2, 64, 64, int8=True, seed=5)
    out = REF.paged_attention(q, kv, meta, scale=0.125)
    for i, s, qi in _per_seq(p, q):
        torch.testing.assert_close(out[s:s + qi.shape[0]].double(), _dense_loop(qi, ks[i], vs[i], scale=0.125),
                                   atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("int8", [False, True], ids=["float", "int8"])
def test_reference_hnd_layout_equals_nhd(int8):
    a = _setup(SEQS, 8, 2, 64, 64, layout="NHD", int8=int8, seed=9)
    b = _setup(SEQS, 8, 2, 64, 64, layout="HND", int8=int8, seed=9)
    assert a[2].k.shape != b[2].k.shape
    torch.testing.assert_close(REF.paged_attention(a[1], a[2], a[3], scale=0.125),
                               REF.paged_attention(b[1], b[2], b[3], scale=0.125), atol=1e-6, rtol=1e-6)


def test_reference_mla_without_v_head_dim_uses_the_whole_latent_as_values():
    p, q, kv, meta, ks, vs = _setup(SEQS, 4, 1, 48, 48, mla=True, seed=4)
    out = REF.paged_attention(q, kv, meta, scale=0.15)
    assert out.shape == (q.shape[0], 4, 48)
    for i, s, qi in _per_seq(p, q):
        torch.testing.assert_close(out[s:s + qi.shape[0]].double(), _dense_loop(qi, ks[i], ks[i], scale=0.15),
                                   atol=1e-5, rtol=1e-5)
