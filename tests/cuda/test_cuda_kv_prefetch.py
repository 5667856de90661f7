"""The decode kernel's prefetch (tl_math.KV_PREFETCH: 0 none, 1 block-table entries a tile ahead,
2 whole tiles a tile ahead in registers) over every cache kind: each variant equals the core
reference, and variants 1 and 2 equal variant 0 bit for bit (the same arithmetic in the same
order; only when the loads are issued differs).

The cases sit on the prefetch's edges: one key (the prologue's tile is the only one, the loop's
next-tile loads all masked off), exactly one tile and one key more (the interpreter's BLOCK_N is 16
up to 128 keys, 64 above), splits (each split's own first / last tile), a sliding window (the
first tile starts mid-block), odd block counts and an empty split.  Unowned cache slots are
poison (NaN scales / zeros / fp8, 0xFF bytes), so a prefetch reading past its range shows as NaN.
"""
from __future__ import annotations

import pytest
import torch

from halinfer.core.attention import LayerKV, MetadataBuilder
from halinfer.core.ops import Ops
from halinfer.core.ops.kv_quant import kv_storage_dtype, kv_stored_dim
from tritonops_util import TOL, paged_plan

REF = Ops()

CASES = [  # id, seqs [(cached, new)], Hq, Hk, D, block size, decode splits, sliding window
    ("len1", [(0, 1)], 4, 2, 64, 16, None, None),
    ("one_tile", [(15, 1), (0, 1)], 4, 2, 64, 16, None, None),
    ("tile_plus1", [(16, 1), (31, 1)], 4, 2, 64, 16, None, None),
    ("splits3", [(99, 1), (40, 1), (2, 1)], 8, 2, 64, 16, 3, None),    # the 3-key one leaves empty splits
    ("window", [(69, 1), (10, 1)], 4, 1, 64, 16, None, 21),
    ("odd_blocks_bs8", [(40, 1), (22, 1)], 6, 3, 64, 8, None, None),   # 41 keys: 6 blocks of 8
    ("tiles64_split", [(139, 1), (64, 1)], 4, 1, 64, 16, 2, None),     # > 128 keys: 64-key tiles
]
KINDS = {  # name: (cache quantization, INT4_WORDS, INT4_SPLIT)
    "model": (None, True, 0), "int8": ("int8", True, 0), "fp8": ("fp8", True, 0),
    "int4_words": ("int4", True, 0), "int4_bytes": ("int4", False, 0), "int4_split4": ("int4", True, 4),
}


def _cache(mode, nb, bs, hk, d, dtype):
    shape = (nb, bs, hk, kv_stored_dim(mode, d) if mode else d)
    if mode is None:
        return torch.full(shape, float("nan"), dtype=dtype), None, None
    if mode in ("int4", "int8"):
        c = torch.full(shape, -1, dtype=torch.int16).to(kv_storage_dtype(mode, None))   # 0xFF
    else:
        c = torch.full(shape, float("nan")).to(kv_storage_dtype(mode, None))
    s = torch.full(shape[:-1], float("nan"))
    z = torch.full(shape[:-1], float("nan")) if mode == "int4" else None
    return c, s, z


def _run(target, gen, kind, seqs, Hq, Hk, D, bs, splits, window, prefetches, monkeypatch):
    from halinfer.kernels.triton import tl_math
    from halinfer.kernels.triton.ops import TritonOps

    mode, words, split = KINDS[kind]
    if mode == "int4" and (words or split) and target.dtype == torch.float32:
        pytest.skip("the int4 word / split tiles are for 16-bit queries (float32 takes the byte tile)")
    monkeypatch.setattr(tl_math, "INT4_WORDS", words)
    monkeypatch.setattr(tl_math, "INT4_SPLIT", split)
    dt = target.dtype
    step, all_slots, nb = paged_plan(seqs, bs, gen)
    kc, ks, kz = _cache(mode, nb, bs, Hk, D, dt)
    vc, vs, vz = _cache(mode, nb, bs, Hk, D, dt)
    kv = LayerKV(kc, vc, "NHD", ks, vs, quant=mode, k_zero=kz, v_zero=vz)
    slots = torch.cat(all_slots)
    n = len(slots)
    k = (torch.randn(n, Hk, D, generator=gen) + torch.randn(n, Hk, 1, generator=gen)).to(dt)
    v = torch.randn(n, Hk, D, generator=gen).to(dt)
    ops = TritonOps(decode_splits=splits)
    ops.store_kv(k, v, kv, slots)
    q = torch.randn(len(seqs), Hq, D, generator=gen).to(dt)
    meta = MetadataBuilder(torch.device("cpu"), bs).build(step)
    assert meta.is_decode
    expect = REF.paged_attention(q.float(), kv, meta, scale=D ** -0.5, sliding_window=window)
    outs = {}
    for pf in prefetches:
        monkeypatch.setattr(tl_math, "KV_PREFETCH", pf)
        outs[pf] = ops.paged_attention(q, kv, meta, scale=D ** -0.5, sliding_window=window).float()
        assert not torch.isnan(outs[pf]).any(), f"prefetch {pf}: NaN (an unowned slot was read)"
        atol, rtol = TOL[dt]
        f = 4.0 if mode == "int4" else 2.0 if mode else 1.0
        torch.testing.assert_close(outs[pf], expect, atol=atol * f, rtol=rtol * f, msg=lambda m: f"prefetch {pf}: {m}")
    return outs


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("name,seqs,Hq,Hk,D,bs,splits,window", CASES, ids=[c[0] for c in CASES])
def test_decode_prefetch_matches_reference_and_no_prefetch(target, gen, monkeypatch, kind, name, seqs, Hq, Hk, D,
                                                           bs, splits, window):
    if not target.interp:
        pytest.skip("bit-equality across variants is checked in the interpreter; the GPU runs the other tests")
    outs = _run(target, gen, kind, seqs, Hq, Hk, D, bs, splits, window, (0, 1, 2), monkeypatch)
    for pf in (1, 2):
        assert torch.equal(outs[pf], outs[0]), \
            f"prefetch {pf} differs from 0 by {float((outs[pf] - outs[0]).abs().max())}"


def test_decode_prefetch_choice(monkeypatch):
    """auto (as timed on the H200): the register prefetch for int4 caches, the block-table prefetch
    for int8 / fp8, none for the model dtype; the register prefetch runs with Triton's pipeliner
    off (num_stages 1)."""
    from halinfer.kernels.triton import attention_decode as ad
    from halinfer.kernels.triton import tl_math

    monkeypatch.setattr(ad, "DECODE_STAGES", 0)
    monkeypatch.setattr(tl_math, "KV_PREFETCH", -1)
    assert [ad.decode_prefetch(m) for m in (0, 1, 2, 3, 5, 8)] == [0, 1, 1, 2, 2, 2]
    assert ad.decode_stages(1) == 2 and ad.decode_stages(8) == 1
    for pf in (0, 1, 2):
        monkeypatch.setattr(tl_math, "KV_PREFETCH", pf)
        assert ad.decode_prefetch(0) == ad.decode_prefetch(3) == pf
        assert ad.decode_stages(1) == (1 if pf == 2 else 2)
