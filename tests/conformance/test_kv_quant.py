"""int4 and fp8 KV caches: store_kv writes what the format defines, and paged attention
over such a cache equals attention over its dequantized values.

The format checks are independent of core/ops/kv_quant.py: int4 nibbles are unpacked
here from the layout (channel 2i low nibble, 2i+1 high), fp8 read through torch's cast."""
from __future__ import annotations

import torch

from halinfer.core.attention import LayerKV
from halinfer.core.ops import Ops

from .kvbuild import flat_rows, plan
from .params import case, conformance

REF = Ops()
MODES = ("int4", "fp8")
STORE_CASES = [case(f"{m}_T{t}_Hk{hk}_D{d}_bs{bs}", mode=m, T=t, Hk=hk, D=d, bs=bs, features=(f"{m}_kv",))
               for m in MODES for t, hk, d, bs in [(5, 2, 64, 16), (37, 1, 128, 8), (3, 4, 18, 16)]]


def _cache(mode, layout, nb, bs, hk, d, dev):
    shape = (nb, bs, hk, d // 2 if mode == "int4" else d)
    if layout == "HND":
        shape = (nb, hk, bs, shape[-1])
    dt = torch.uint8 if mode == "int4" else torch.float8_e4m3fn
    k = torch.zeros(shape, dtype=dt, device=dev)
    v = torch.zeros(shape, dtype=dt, device=dev)
    meta = shape[:-1]
    s = [torch.full(meta, float("nan"), device=dev) for _ in range(2)]
    z = [torch.full(meta, float("nan"), device=dev) for _ in range(2)] if mode == "int4" else [None, None]
    return LayerKV(k, v, layout, k_scale=s[0], v_scale=s[1], quant=mode, k_zero=z[0], v_zero=z[1])


def _read(kv: LayerKV, cache, scale, zero, slots, hk, bs):
    """Dequantized float32 [n, Hk, D] at ``slots``, from the format's definition."""
    rows = flat_rows(kv.layout, slots.cpu(), hk, bs).flatten()
    raw = cache.cpu().reshape(-1, cache.shape[-1])[rows]
    s = scale.cpu().reshape(-1)[rows][:, None]
    if kv.quant == "int4":
        b = raw.to(torch.int32)
        q = torch.empty(raw.shape[0], raw.shape[1] * 2)
        q[:, 0::2], q[:, 1::2] = (b & 15).float(), (b >> 4).float()
        x = q * s + zero.cpu().reshape(-1)[rows][:, None]
    else:
        x = raw.float() * s
    return x.view(len(slots), hk, -1)


@conformance("store_kv", STORE_CASES)
def test_store_kv_quantized_modes(prov, dtype, case, gen):
    dev, layout, bs = prov.device, prov.kv_layout, prov.block_size(case.bs)
    nb = -(-case.T // bs) + 2
    slots = torch.randperm((nb - 1) * bs, generator=gen)[:case.T] + bs    # block 0 never written
    kv = _cache(case.mode, layout, nb, bs, case.Hk, case.D, dev)
    k = torch.randn(case.T, case.Hk, case.D, generator=gen).to(dtype) * 3
    v = torch.randn(case.T, case.Hk, case.D, generator=gen).to(dtype)
    prov.ops.store_kv(k.to(dev), v.to(dev), kv, slots.to(dev))
    for name, x, cache, sc, z in (("k", k, kv.k, kv.k_scale, kv.k_zero), ("v", v, kv.v, kv.v_scale, kv.v_zero)):
        got = _read(kv, cache, sc, z, slots, case.Hk, bs)
        xf = x.float()
        if case.mode == "int4":     # within half a step of (max - min) / 15, and the range is kept
            step = (xf.amax(-1) - xf.amin(-1)) / 15
            assert bool(((got - xf).abs() <= step[..., None] * 0.5 + 1e-4).all()), f"{name}: off by > half a step"
        else:                       # e4m3 keeps 3 mantissa bits: relative error <= 2^-4 of the row max
            amax = xf.abs().amax(-1, keepdim=True)
            assert bool(((got - xf).abs() <= amax * 2 ** -4 + 1e-4).all()), f"{name}: beyond fp8 rounding"
        untouched_rows = flat_rows(layout, torch.arange(bs), case.Hk, bs).flatten()
        assert bool((cache.cpu().reshape(-1, cache.shape[-1])[untouched_rows].float() == 0).all())


ATTN_CASES = [case(f"{m}_{n}", mode=m, seqs=s, Hq=hq, Hk=hk, D=d, features=(f"{m}_kv",))
              for m in MODES for n, s, hq, hk, d in [("decode", [(20, 1), (3, 1), (40, 1)], 8, 2, 64),
                                                    ("prefill", [(9, 7), (0, 12)], 4, 4, 128)]]


@conformance("paged_attention", ATTN_CASES)
def test_paged_attention_over_quantized_modes(prov, dtype, case, gen):
    dev, layout, bs = prov.device, prov.kv_layout, prov.block_size(16)
    p = plan(case.seqs, bs, gen)
    kv = _cache(case.mode, layout, p.num_blocks, bs, case.Hk, case.D, dev)
    for i, n in enumerate(p.seq_lens):               # every position, through the provider's own store
        slots = p.seq_slots(i)
        k = torch.randn(n, case.Hk, case.D, generator=gen).to(dtype)
        v = torch.randn(n, case.Hk, case.D, generator=gen).to(dtype)
        prov.ops.store_kv(k.to(dev), v.to(dev), kv, slots.to(dev))
    # the reference reads the same bytes through the dequantized float32 values
    dense = LayerKV(torch.zeros(p.num_blocks, bs, case.Hk, case.D), torch.zeros(p.num_blocks, bs, case.Hk, case.D))
    for i, n in enumerate(p.seq_lens):
        slots = p.seq_slots(i)
        rows = flat_rows("NHD", slots, case.Hk, bs).flatten()
        dense.k.view(-1, case.D)[rows] = _read(kv, kv.k, kv.k_scale, kv.k_zero, slots, case.Hk, bs).reshape(-1, case.D)
        dense.v.view(-1, case.D)[rows] = _read(kv, kv.v, kv.v_scale, kv.v_zero, slots, case.Hk, bs).reshape(-1, case.D)
    T = sum(p.q_lens)
    q = torch.randn(T, case.Hq, case.D, generator=gen).to(dtype)
    meta = prov.metadata_builder(dev, bs).build(p.step)
    out = prov.ops.paged_attention(q.to(dev), kv, meta, scale=case.D ** -0.5)
    from halinfer.core.attention import MetadataBuilder
    expect = REF.paged_attention(q.float(), dense, MetadataBuilder(torch.device("cpu"), bs).build(p.step),
                                 scale=case.D ** -0.5)
    tol = {torch.float32: 1e-4, torch.float16: 5e-3, torch.bfloat16: 3e-2}[dtype]
    torch.testing.assert_close(out.cpu().float(), expect, atol=tol, rtol=tol)
