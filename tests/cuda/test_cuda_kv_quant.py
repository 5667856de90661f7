"""int4 and fp8 KV caches in the Triton kernels: store_kv writes what core/ops/kv_quant.py
defines, and decode / prefill attention over the stored cache equals the core reference's
attention over the same bytes (which it dequantizes with kv_quant.dequantize_kv).

Shapes are picked to cross the kernels' edges: GQA groups 1, 4 and 7 (odd head counts),
head dims that are not powers of two, block sizes 8 to 32, sequence lengths on both sides
of the interpreter's key tiles (16 / 64) and of the decode splits.  Everything the step's
sequences do not own is poison (NaN scales and zeros, NaN fp8 / 0xFF int4 bytes), so a
kernel reading a slot it does not own gives NaN."""
from __future__ import annotations

import pytest
import torch

from halinfer.core.attention import LayerKV, MetadataBuilder
from halinfer.core.ops import Ops
from halinfer.core.ops.kv_quant import kv_storage_dtype, kv_stored_dim
from tritonops_util import TOL, paged_plan, read, ref

REF = Ops()
MODES = ("int4", "fp8")


def _cache(mode, layout, nb, bs, hk, d, device):
    """A poisoned quantized cache of one kind (k or v): (values, scales, zeros or None)."""
    dd = kv_stored_dim(mode, d)
    shape = (nb, bs, hk, dd) if layout == "NHD" else (nb, hk, bs, dd)
    if mode == "int4":
        c = torch.full(shape, 0xFF, dtype=torch.uint8, device=device)
    else:
        c = torch.full(shape, float("nan"), dtype=torch.float32, device=device).to(kv_storage_dtype(mode, None))
    s = torch.full(shape[:-1], float("nan"), device=device)
    z = torch.full(shape[:-1], float("nan"), device=device) if mode == "int4" else None
    return c, s, z


def _layer(mode, layout, nb, bs, hk, d, dv, device) -> LayerKV:
    kc, ks, kz = _cache(mode, layout, nb, bs, hk, d, device)
    vc, vs, vz = (None, None, None) if dv is None else _cache(mode, layout, nb, bs, hk, dv, device)
    return LayerKV(kc, vc, layout, ks, vs, quant=mode, k_zero=kz, v_zero=vz)


def _cpu(kv: LayerKV) -> LayerKV:
    c = lambda t: None if t is None else t.detach().cpu().clone()  # noqa: E731
    return LayerKV(c(kv.k), c(kv.v), kv.layout, c(kv.k_scale), c(kv.v_scale), kv.quant, c(kv.k_zero), c(kv.v_zero))


def _tol(dtype, mode):
    atol, rtol = TOL[dtype]
    # int4 adds z * sum(q) to the scores (a larger magnitude than the scores themselves):
    # low-precision q rounding shows a little more.
    f = 4.0 if mode == "int4" else 2.0
    return atol * f, rtol * f


STORE_CASES = [  # T, Hk, D, Dv (None: MLA), block size, share of negative slots
    (1, 1, 64, 64, 16, 0.0),
    (7, 3, 80, 80, 16, 0.3),
    (40, 8, 128, 128, 32, 0.2),
    (33, 4, 96, 64, 8, 0.2),
    (19, 1, 80, None, 16, 0.2),
    (5, 2, 6, 6, 16, 0.0),            # head dim below a tile
]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("layout", ["NHD", "HND"])
@pytest.mark.parametrize("T,Hk,D,Dv,bs,neg", STORE_CASES,
                         ids=[f"T{c[0]}_hk{c[1]}_d{c[2]}_dv{c[3]}_bs{c[4]}" for c in STORE_CASES])
def test_store_kv_quantized_matches_reference(target, ops, gen, mode, layout, T, Hk, D, Dv, bs, neg):
    dev, dt = target.device, target.dtype
    nb = -(-T // bs) + 3
    slots = (torch.randperm((nb - 2) * bs, generator=gen) + bs)[:T].long()
    slots[torch.rand(T, generator=gen) < neg] = -1
    k = (torch.randn(T, Hk, D, generator=gen) * 3 + torch.randn(T, Hk, 1, generator=gen)).to(dev, dt)
    v = None if Dv is None else torch.randn(T, Hk, Dv, generator=gen).to(dev, dt)
    kv = _layer(mode, layout, nb, bs, Hk, D, Dv, dev)
    want = _cpu(kv)
    ops.store_kv(k, v, kv, slots.to(dev))
    REF.store_kv(ref(k), ref(v), want, slots)
    got = _cpu(kv)
    for name in ("k", "v"):
        gc, wc = getattr(got, name), getattr(want, name)
        if wc is None:
            continue
        gs, ws = getattr(got, f"{name}_scale"), getattr(want, f"{name}_scale")
        assert torch.equal(gs.isnan(), ws.isnan()), f"{name}: scales written outside the mapped slots"
        torch.testing.assert_close(gs.nan_to_num(), ws.nan_to_num(), rtol=1e-6, atol=0, msg=f"{name} scales")
        if mode == "int4":
            gz, wz = getattr(got, f"{name}_zero"), getattr(want, f"{name}_zero")
            assert torch.equal(gz.nan_to_num(), wz.nan_to_num()) and torch.equal(gz.isnan(), wz.isnan()), \
                f"{name}: zeros differ"
            # nibble by nibble: a rounding tie after a different division may land one step apart
            gn = torch.stack((gc & 15, gc >> 4), -1).int()
            wn = torch.stack((wc & 15, wc >> 4), -1).int()
            untouched = wc == 0xFF
            assert torch.equal(gc[untouched], wc[untouched]), f"{name}: bytes written outside the mapped slots"
            assert int((gn - wn).abs().max()) <= 1 and float((gn != wn).float().mean()) < 1e-3, f"{name}: nibbles"
        else:
            assert torch.equal(gc.float().isnan(), wc.float().isnan()), f"{name}: written outside the mapped slots"
            g, w = gc.float().nan_to_num(), wc.float().nan_to_num()
            differ = g != w
            # an fp8 value off by one step (a tie) is allowed, rarely
            assert float(differ.float().mean()) < 1e-3, f"{name}: {int(differ.sum())} fp8 values differ"
        # and what was stored reads back close to the input (the format's own bound)
        x = ref(k if name == "k" else v)
        valid = slots >= 0
        if valid.any():
            from halinfer.core.ops.kv_quant import dequantize_kv
            sl = slots[valid]
            z = read(getattr(got, f"{name}_zero"), layout, sl, bs) if mode == "int4" else None
            back = dequantize_kv(read(gc, layout, sl, bs), read(gs, layout, sl, bs), z, mode)
            xv = x[valid]
            if mode == "int4":
                bound = (xv.amax(-1) - xv.amin(-1))[..., None] / 15 * 0.5001 + 1e-5
            else:
                bound = xv.abs().amax(-1, keepdim=True) * 2 ** -4 + 1e-5
            assert bool(((back - xv).abs() <= bound).all()), f"{name}: read back beyond the format's rounding"


ATTN_CASES = [  # id, seqs [(cached, new)], Hq, Hk, D, Dv (None: MLA, Dv channels of the latent), block size
    ("decode_g1", [(0, 1), (16, 1), (64, 1), (130, 1)], 4, 4, 64, 64, 16),
    ("decode_g4_odd", [(15, 1), (63, 1), (17, 1)], 12, 3, 80, 80, 8),
    ("decode_g7", [(31, 1), (100, 1), (1, 1)], 21, 3, 128, 128, 32),
    ("decode_mqa7", [(47, 1), (5, 1)], 7, 1, 64, 64, 16),
    ("decode_mla", [(20, 1), (66, 1)], 8, 1, 96, 64, 16),
    ("prefill_g1", [(0, 17), (9, 7)], 4, 4, 64, 64, 16),
    ("prefill_g4_odd", [(0, 33), (40, 9), (70, 1)], 12, 3, 80, 80, 8),
    ("prefill_g7", [(5, 20), (0, 65)], 14, 2, 128, 128, 32),
    ("prefill_dv", [(16, 16), (3, 30)], 6, 2, 96, 64, 16),
]


@pytest.mark.parametrize("splits", [None, 3], ids=["auto_splits", "splits3"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("layout", ["NHD", "HND"])
@pytest.mark.parametrize("name,seqs,Hq,Hk,D,Dv,bs", ATTN_CASES, ids=[c[0] for c in ATTN_CASES])
def test_attention_over_quantized_cache(target, gen, layout, mode, splits, name, seqs, Hq, Hk, D, Dv, bs):
    from halinfer.kernels.triton.ops import TritonOps

    decode = all(q == 1 for _, q in seqs)
    if splits is not None and not decode:
        pytest.skip("decode splits only apply to decode steps")
    ops = TritonOps(decode_splits=splits)
    dev, dt = target.device, target.dtype
    mla = name.endswith("mla")
    step, all_slots, nb = paged_plan(seqs, bs, gen)
    kv = _layer(mode, layout, nb, bs, Hk, D, None if mla else Dv, dev)
    # Store every position, all sequences in one call, through the kernel under test.
    slots = torch.cat(all_slots)
    k = torch.randn(len(slots), Hk, D, generator=gen) * 1.5 + torch.randn(len(slots), Hk, 1, generator=gen)
    v = None if mla else torch.randn(len(slots), Hk, Dv, generator=gen)
    ops.store_kv(k.to(dev, dt), None if mla else v.to(dev, dt), kv, slots.to(dev))
    T = int(step.q_lens.sum())
    q = torch.randn(T, Hq, D, generator=gen).to(dt)
    meta = MetadataBuilder(torch.device(dev), bs).build(step)
    assert meta.is_decode == decode
    out = ops.paged_attention(q.to(dev), kv, meta, scale=D ** -0.5, v_head_dim=Dv if mla else None)
    # The reference reads the same bytes (dequantized in float32).
    expect = REF.paged_attention(q.float(), _cpu(kv), MetadataBuilder(torch.device("cpu"), bs).build(step),
                                 scale=D ** -0.5, v_head_dim=Dv if mla else None)
    a = out.detach().cpu().float()
    assert not torch.isnan(a).any(), f"{int(torch.isnan(a).sum())} NaN: an unowned slot was read or output unwritten"
    atol, rtol = _tol(dt, mode)
    torch.testing.assert_close(a, expect, atol=atol, rtol=rtol)
