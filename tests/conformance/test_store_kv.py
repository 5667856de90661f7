"""store_kv: every new token lands in its slot, negative slots are skipped, and
nothing else in the (poisoned) cache changes; int8 caches quantize per token and head."""
from __future__ import annotations

import torch

from halinfer.core.ops import Ops

from .checks import ref, same_bits
from .kvbuild import (layer_kv, poisoned_cache, quantize_int8, read_rows, read_scales, write_rows,
                      write_scales)
from .params import case, conformance

REF = Ops()


def _cases():
    out = []
    for t, hk, d, dv, bs, neg in [
        (1, 1, 64, 64, 16, False),
        (7, 2, 80, 80, 16, True),
        (1000, 8, 128, 128, 16, True),
        (33, 4, 96, 64, 32, True),          # value head dim differs from the key's
        (19, 1, 80, None, 16, True),        # MLA: one latent cache, no values
        (50, 2, 64, 64, 1, False),          # block size 1: every token its own block
        (4, 2, 64, 64, 16, "all"),          # a step of padding only
    ]:
        for int8 in (False, True):
            feats = (("int8_kv",) if int8 else ()) + (("mla",) if dv is None else ())
            name = f"T{t}_hk{hk}_d{d}_{'mla' if dv is None else f'dv{dv}'}_bs{bs}" + \
                   ("_neg" if neg is True else "_allneg" if neg == "all" else "") + ("_int8" if int8 else "")
            out.append(case(name, T=t, Hk=hk, D=d, Dv=dv, bs=bs, neg=neg, int8=int8, features=feats))
    return out


def _slots(case, bs, gen):
    need = -(-case.T // bs) + 3
    num_blocks = need + 2
    free = (torch.randperm((num_blocks - 2) * bs, generator=gen) + bs)[: case.T]   # skip block 0 and the last
    if case.neg == "all":
        free[:] = -1
    elif case.neg:
        neg = torch.rand(case.T, generator=gen) < 0.2
        neg[torch.randint(0, case.T, (1,), generator=gen)] = True      # at least one
        free[neg] = -1
    return free.long(), num_blocks


@conformance("store_kv", _cases())
def test_store_kv(prov, dtype, case, gen):
    bs = prov.block_size(case.bs)
    slots, num_blocks = _slots(case, bs, gen)
    dev, layout = prov.device, prov.kv_layout
    k = torch.randn(case.T, case.Hk, case.D, generator=gen).to(dev, dtype)
    v = None if case.Dv is None else torch.randn(case.T, case.Hk, case.Dv, generator=gen).to(dev, dtype)
    kc, ks = poisoned_cache(layout, num_blocks, bs, case.Hk, case.D, dtype, dev, case.int8)
    vc, vs = (None, None) if v is None else poisoned_cache(layout, num_blocks, bs, case.Hk, case.Dv, dtype, dev,
                                                           case.int8)
    before = [None if t is None else t.clone() for t in (kc, ks, vc, vs)]
    with torch.no_grad():
        prov.ops.store_kv(k, v, layer_kv(kc, vc, layout, ks, vs), slots.to(dev))

    valid = slots >= 0
    for name, x, cache, scales, init, init_s in (("k", k, kc, ks, before[0], before[1]),
                                                 ("v", v, vc, vs, before[2], before[3])):
        if x is None:
            continue
        if not case.int8:
            # Exact: a store is a copy, and every other element must still be poison.
            expect = init.clone()
            write_rows(expect, layout, slots[valid], x[valid.to(x.device)], bs)
            assert same_bits(cache, expect), f"{name} cache: wrong values in written slots or other slots touched"
            continue
        _check_int8(name, x, cache, scales, init, init_s, slots, layout, bs)


def _check_int8(name, x, cache, scales, init, init_s, slots, layout, bs):
    valid = slots >= 0
    hk, d = x.shape[1], x.shape[2]
    # Untouched: rebuild the poisoned cache with the provider's own written rows; it must equal what is there.
    got_q = read_rows(cache, layout, slots[valid], hk, bs).cpu()
    got_s = read_scales(scales, layout, slots[valid], hk, bs).cpu()
    expect, expect_s = init.clone(), init_s.clone()
    write_rows(expect, layout, slots[valid], got_q, bs)
    write_scales(expect_s, layout, slots[valid], got_s, bs)
    assert same_bits(cache, expect) and same_bits(scales, expect_s), f"{name}: slots not in the mapping changed"

    xv = ref(x)[valid]
    # Independent: symmetric per-(token, head) quantization reproduces x within half a step.
    q_ind, s_ind = quantize_int8(xv)
    torch.testing.assert_close(got_s, s_ind, rtol=1e-5, atol=0, msg=lambda m: f"{name} scales: {m}")
    err = (got_q.float() * got_s[..., None] - xv).abs()
    assert bool((err <= got_s[..., None] * 0.501 + 1e-7).all()), f"{name}: dequantized value off by more than half a step"
    assert _max_diff(got_q, q_ind) <= 1, f"{name}: int8 values differ by more than 1"

    # And against the core reference (an NHD cache on the CPU; v is stored the way k is).
    rc, rs = poisoned_cache("NHD", cache.shape[0], bs, hk, d, torch.float32, "cpu", int8=True)
    REF.store_kv(ref(x), None, layer_kv(rc, None, "NHD", rs), slots)
    rq, rsc = read_rows(rc, "NHD", slots[valid], hk, bs), read_scales(rs, "NHD", slots[valid], hk, bs)
    assert _max_diff(got_q, rq) <= 1, f"{name}: int8 values differ from the reference by more than 1"
    torch.testing.assert_close(got_s, rsc, rtol=1e-5, atol=0)


def _max_diff(a, b) -> int:
    return int((a.int() - b.int()).abs().max()) if a.numel() else 0
