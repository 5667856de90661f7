"""store_kv: each new token lands in its slot, negative slots are skipped, nothing
else in the poisoned cache changes; int8 caches quantize per (token, head)."""
from __future__ import annotations

import pytest
import torch

from halinfer.core.attention import LayerKV
from halinfer.core.ops import Ops
from tritonops_util import poisoned, randn, read, ref

REF = Ops()

CASES = [  # T, Hk, D, Dv (None: MLA), block size, share of negative slots
    (1, 1, 64, 64, 16, 0.0),
    (7, 2, 80, 80, 16, 0.3),
    (40, 8, 128, 128, 32, 0.2),
    (33, 4, 96, 64, 16, 0.2),      # value head dim differs from the key's
    (19, 1, 80, None, 16, 0.2),    # MLA: one latent cache, no values
    (9, 2, 256, 256, 1, 0.0),      # block size 1
    (4, 2, 64, 64, 16, 1.0),       # padding only
]


def _slots(T, bs, neg, gen):
    num_blocks = -(-T // bs) + 4
    slots = (torch.randperm((num_blocks - 2) * bs, generator=gen) + bs)[:T].long()   # block 0 and last untouched
    slots[torch.rand(T, generator=gen) < neg] = -1
    return slots, num_blocks


@pytest.mark.parametrize("layout", ["NHD", "HND"])
@pytest.mark.parametrize("T,Hk,D,Dv,bs,neg", CASES, ids=[f"T{c[0]}_hk{c[1]}_d{c[2]}_dv{c[3]}_bs{c[4]}_neg{c[5]}"
                                                         for c in CASES])
def test_store_kv_writes_exactly_the_mapped_slots(target, ops, gen, layout, T, Hk, D, Dv, bs, neg):
    dev, dt = target.device, target.dtype
    slots, nb = _slots(T, bs, neg, gen)
    k = randn(gen, T, Hk, D, dtype=dt, device=dev)
    v = None if Dv is None else randn(gen, T, Hk, Dv, dtype=dt, device=dev)
    kc, _ = poisoned(layout, nb, bs, Hk, D, dt, dev)
    vc = None if Dv is None else poisoned(layout, nb, bs, Hk, Dv, dt, dev)[0]
    ek, ev = kc.clone().cpu(), None if vc is None else vc.clone().cpu()
    ops.store_kv(k, v, LayerKV(kc, vc, layout), slots.to(dev))
    REF.store_kv(k.cpu(), None if v is None else v.cpu(), LayerKV(ek, ev, layout), slots)
    # A store is a copy: bit-exact, and every other element still NaN.
    assert torch.equal(kc.cpu().isnan(), ek.isnan()) and torch.equal(kc.cpu().nan_to_num(), ek.nan_to_num())
    if vc is not None:
        assert torch.equal(vc.cpu().isnan(), ev.isnan()) and torch.equal(vc.cpu().nan_to_num(), ev.nan_to_num())


@pytest.mark.parametrize("layout", ["NHD", "HND"])
@pytest.mark.parametrize("T,Hk,D,Dv,bs,neg", CASES[:5], ids=[f"T{c[0]}_hk{c[1]}_d{c[2]}_dv{c[3]}" for c in CASES[:5]])
def test_store_kv_int8_quantizes_per_token_and_head(target, ops, gen, layout, T, Hk, D, Dv, bs, neg):
    dev, dt = target.device, target.dtype
    slots, nb = _slots(T, bs, neg, gen)
    k = randn(gen, T, Hk, D, dtype=dt, device=dev, scale=2.0)
    v = None if Dv is None else randn(gen, T, Hk, Dv, dtype=dt, device=dev)
    kc, ks = poisoned(layout, nb, bs, Hk, D, dt, dev, int8=True)
    vc, vs = (None, None) if Dv is None else poisoned(layout, nb, bs, Hk, Dv, dt, dev, int8=True)
    ops.store_kv(k, v, LayerKV(kc, vc, layout, ks, vs), slots.to(dev))
    valid = slots >= 0
    for x, cache, scales, width in ((k, kc, ks, D), (v, vc, vs, Dv)):
        if x is None:
            continue
        rc, rs = poisoned(layout, nb, bs, Hk, width, dt, "cpu", int8=True)
        REF.store_kv(ref(x), None, LayerKV(rc, None, layout, rs), slots)
        got_q, want_q = cache.cpu(), rc
        # Same int8 everywhere (a torch.round tie may land one step apart after a different division).
        assert int((got_q.int() - want_q.int()).abs().max()) <= 1
        assert float((got_q != want_q).float().mean()) < 1e-3
        got_s, want_s = scales.cpu(), rs
        assert torch.equal(got_s.isnan(), want_s.isnan()), "scales written outside the mapped slots"
        torch.testing.assert_close(got_s.nan_to_num(), want_s.nan_to_num(), rtol=1e-6, atol=0)
        # Dequantized values reproduce the input within half a step.
        if valid.any():
            q = read(cache, layout, slots[valid], bs).cpu().float()
            s = read(scales, layout, slots[valid], bs).cpu()
            err = (q * s[..., None] - ref(x)[valid]).abs()
            assert bool((err <= s[..., None] * 0.5001 + 1e-7).all())
