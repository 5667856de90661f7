"""rotary_store_kv: the rotated q is rotary's, and the cache holds what store_kv writes for the
rotated k and for v, in every cache mode; compared with the reference's composition (rotary,
then store_kv) run on the CPU over a copy of the same poisoned cache."""
from __future__ import annotations

import torch

from halinfer.core.attention import LayerKV
from halinfer.core.ops import Ops

from .checks import assert_close, assert_within, ref, same_bits, untouched
from .kvbuild import flat_rows, poisoned_cache
from .params import case, conformance
from .test_kv_quant import _read as read_quantized
from .test_rotary import MAX_POS, random_cos_sin_cache

REF = Ops()
MODES = (None, "int8", "int4", "fp8")

CASES = [
    case(f"T{t}_hq{hq}_hk{hk}_d{d}_rot{r}_{'neox' if neox else 'gptj'}_bs{bs}{'_neg' if neg else ''}_{m or 'auto'}",
         T=t, Hq=hq, Hk=hk, D=d, rot=r, neox=neox, bs=bs, neg=neg, mode=m,
         features=((f"{m}_kv",) if m else ()) + (("partial",) if r < d else ()))
    for t, hq, hk, d, r, neox, bs, neg in [
        (1, 4, 2, 64, 64, True, 16, False),        # a decode step
        (7, 8, 2, 128, 128, False, 16, True),
        (33, 6, 2, 80, 32, True, 8, True),         # partial rotary, odd head count
        (5, 4, 4, 96, 96, False, 16, False),
    ]
    for m in MODES
]


def _cache(mode, layout, nb, bs, hk, d, dtype, dev):
    """A poisoned LayerKV of this mode (k and v the same head dim)."""
    if mode in (None, "int8"):
        (kc, ks), (vc, vs) = (poisoned_cache(layout, nb, bs, hk, d, dtype, dev, mode == "int8") for _ in range(2))
        return LayerKV(kc, vc, layout, k_scale=ks, v_scale=vs, quant=mode)
    shape = (nb, bs, hk, d // 2 if mode == "int4" else d)
    if layout == "HND":
        shape = (nb, hk, bs, shape[-1])
    dt = torch.uint8 if mode == "int4" else torch.float8_e4m3fn
    poison = torch.randint(0, 256, shape, dtype=torch.uint8)
    caches = [poison.view(dt).to(dev), poison.clone().view(dt).to(dev)]
    meta = [torch.full(shape[:-1], float("nan"), device=dev) for _ in range(4)]
    return LayerKV(caches[0], caches[1], layout, k_scale=meta[0], v_scale=meta[1], quant=mode,
                   k_zero=meta[2] if mode == "int4" else None, v_zero=meta[3] if mode == "int4" else None)


def _cpu(kv: LayerKV) -> LayerKV:
    c = lambda t: None if t is None else t.detach().cpu().clone()
    return LayerKV(c(kv.k), c(kv.v), kv.layout, k_scale=c(kv.k_scale), v_scale=c(kv.v_scale), quant=kv.quant,
                   k_zero=c(kv.k_zero), v_zero=c(kv.v_zero))


def _rows(kv: LayerKV, which: str, slots, hk, bs):
    """(dequantized float32 [n, Hk, D], per-row scale or None) at ``slots``, from the format."""
    cache, scale, zero = (kv.k, kv.k_scale, kv.k_zero) if which == "k" else (kv.v, kv.v_scale, kv.v_zero)
    if kv.quant is None:
        rows = flat_rows(kv.layout, slots.cpu(), hk, bs).flatten()
        return cache.cpu().reshape(-1, cache.shape[-1])[rows].float().view(len(slots), hk, -1), None
    s = scale.cpu().reshape(-1)[flat_rows(kv.layout, slots.cpu(), hk, bs).flatten()]
    return read_quantized(kv, cache, scale, zero, slots, hk, bs), s.view(len(slots), hk, 1)


def _bytes(t):
    return t.detach().cpu().contiguous().view(torch.uint8)


@conformance("rotary_store_kv", CASES)
def test_rotary_store_kv(prov, dtype, case, gen):
    dev, layout, bs = prov.device, prov.kv_layout, prov.block_size(case.bs)
    T, hq, hk, d = case.T, case.Hq, case.Hk, case.D
    nb = -(-T // bs) + 2
    slots = torch.randperm((nb - 1) * bs, generator=gen)[:T] + bs        # block 0 never written
    if case.neg:
        slots[torch.rand(T, generator=gen) < 0.3] = -1
        slots[0] = -1
    # q, k, v as views of one fused projection, as models hand them over
    qkv = (torch.randn(T, (hq + 2 * hk) * d, generator=gen) * 2).to(dev, dtype)
    q = qkv[:, : hq * d].view(T, hq, d)
    k = qkv[:, hq * d: (hq + hk) * d].view(T, hk, d)
    v = qkv[:, (hq + hk) * d:].view(T, hk, d)
    cs = random_cos_sin_cache(case.rot, gen, mscale=1.25)
    pos = torch.randint(0, MAX_POS, (T,), generator=gen)
    kv = _cache(case.mode, layout, nb, bs, hk, d, dtype, dev)
    kv_ref = _cpu(kv)
    before = _cpu(kv)
    with untouched(qkv=qkv), torch.no_grad():
        qo = prov.ops.rotary_store_kv(q, k, v, pos.to(dev), cs.to(dev), case.neox, kv, slots.to(dev))
    eq = REF.rotary_store_kv(ref(q).to(dtype), ref(k).to(dtype), ref(v).to(dtype), pos, cs, case.neox, kv_ref, slots)

    assert qo.dtype == dtype and tuple(qo.shape) == (T, hq, d)
    assert_close(qo, eq.float(), dtype, factor=2, what="q")
    valid = slots[slots >= 0]
    for which in ("k", "v"):
        got, s_got = _rows(kv, which, valid, hk, bs)
        want, s_want = _rows(kv_ref, which, valid, hk, bs)
        if case.mode is None:
            assert_close(got, want, dtype, factor=2, what=f"{which} cache")
        else:
            # the rotated k may differ from the reference's by its last bit (the multiply-adds may
            # fuse), which can move a code by one step: one step of either scale (fp8: an eighth)
            step = torch.maximum(s_got, s_want) * 1.01
            bound = want.abs() / 8 + step if case.mode == "fp8" else step
            assert_within(got, want, bound, what=f"{which} cache ({case.mode})")
        # every row not written is as it was
        cache, old = (kv.k, before.k) if which == "k" else (kv.v, before.v)
        written = torch.zeros(cache.reshape(-1, cache.shape[-1]).shape[0], dtype=torch.bool)
        written[flat_rows(layout, valid, hk, bs).flatten()] = True
        assert same_bits(_bytes(cache).reshape(written.shape[0], -1)[~written],
                         _bytes(old).reshape(written.shape[0], -1)[~written]), f"{which} cache: unwritten rows changed"
