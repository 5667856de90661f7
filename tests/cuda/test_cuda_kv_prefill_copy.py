"""Prefill over a quantized KV cache through a model-dtype copy of the step's blocks
(kernels/triton/kv_dequant.py): the copy holds exactly what core.ops.kv_quant.dequantize_kv
gives for those blocks, attention through it equals the reference over the cache's bytes, and
prefill_copy takes it only where it says it does (fresh prompts; not decode-heavy steps, MLA,
block sizes that are not powers of two, or copies past the size cap)."""
from __future__ import annotations

import pytest
import torch

from halinfer.core.attention import MetadataBuilder
from halinfer.core.ops.kv_quant import dequantize_kv
from test_cuda_kv_quant import ATTN_CASES, _attend, _cpu, _layer
from tritonops_util import paged_plan

PREFILL_CASES = [c for c in ATTN_CASES if not all(q == 1 for _, q in c[1])]
COPY_MODES = ("int4", "fp8", "int8")


@pytest.mark.parametrize("mode", COPY_MODES)
@pytest.mark.parametrize("layout", ["NHD", "HND"])
@pytest.mark.parametrize("name,seqs,Hq,Hk,D,Dv,bs", PREFILL_CASES, ids=[c[0] for c in PREFILL_CASES])
def test_prefill_through_copy_matches_reference(target, gen, monkeypatch, layout, mode, name, seqs, Hq, Hk, D, Dv,
                                                bs):
    from halinfer.kernels.triton import kv_dequant

    calls = []
    real = kv_dequant.dequant_blocks
    monkeypatch.setattr(kv_dequant, "dequant_blocks", lambda *a: calls.append(1) or real(*a))
    _attend(target, gen, layout, mode, None, name, seqs, Hq, Hk, D, Dv, bs, copy=True)
    assert calls, "the prefill did not go through the copy"


def _stored(target, gen, mode, layout, seqs, Hk, D, bs):
    from halinfer.kernels.triton.ops import TritonOps

    step, all_slots, nb = paged_plan(seqs, bs, gen)
    kv = _layer(mode, layout, nb, bs, Hk, D, D, target.device)
    slots = torch.cat(all_slots)
    k = (torch.randn(len(slots), Hk, D, generator=gen) * 2 + 1).to(target.device, target.dtype)
    v = torch.randn(len(slots), Hk, D, generator=gen).to(target.device, target.dtype)
    TritonOps().store_kv(k, v, kv, slots.to(target.device))
    return step, kv


@pytest.mark.parametrize("mode", COPY_MODES)
@pytest.mark.parametrize("layout", ["NHD", "HND"])
@pytest.mark.parametrize("D,bs", [(64, 16), (80, 8), (36, 32)])
def test_dequant_blocks_equals_dequantize_kv(target, gen, mode, layout, D, bs):
    from halinfer.kernels.triton.kv_dequant import dequant_blocks

    step, kv = _stored(target, gen, mode, layout, [(5, 30), (0, 17)], 3, D, bs)
    blocks = torch.as_tensor(step.block_tables).to(target.device)
    got = dequant_blocks(kv, blocks, torch.float32)
    ref = _cpu(kv)
    idx = blocks.reshape(-1).long().clamp(min=0).cpu()
    for name, cache, sc, z in (("k", ref.k, ref.k_scale, ref.k_zero), ("v", ref.v, ref.v_scale, ref.v_zero)):
        c, s, zz = cache[idx], sc[idx], None if z is None else z[idx]
        if layout == "HND":   # the copy is NHD
            c, s, zz = c.transpose(1, 2), s.transpose(1, 2), None if zz is None else zz.transpose(1, 2)
        want = dequantize_kv(c, s, zz, mode)
        have = getattr(got, name).cpu()
        owned = ~torch.isnan(want)   # unowned slots hold poison in both
        assert owned.any()
        torch.testing.assert_close(have[owned], want[owned], rtol=2e-6, atol=1e-6)


def test_prefill_copy_decisions(target, gen, monkeypatch):
    from halinfer.kernels.triton import kv_dequant

    monkeypatch.setattr(kv_dequant, "DEQUANT_MODES", {"int4"})
    dev = torch.device(target.device)

    def decide(seqs, bs=16, mode="int4", mla=False):
        step, kv = _stored(target, gen, mode, "NHD", seqs, 2, 64, bs)
        if mla:
            kv.v = None
        meta = MetadataBuilder(dev, bs).build(step)
        q = torch.zeros(int(step.q_lens.sum()), 4, 64, device=dev, dtype=target.dtype)
        out_kv, out_meta = kv_dequant.prefill_copy(q, kv, meta)
        return out_kv is not kv, out_meta

    took, meta = decide([(0, 40), (0, 9)])
    assert took and meta.block_tables.flatten().tolist() == list(range(meta.block_tables.numel()))
    assert not decide([(300, 1), (0, 5)])[0], "a decode-heavy step must read the cache"
    assert not decide([(0, 40)], mode="fp8")[0], "fp8 is not in DEQUANT_MODES here"
    assert not decide([(0, 40)], mla=True)[0], "MLA has no value cache to copy"
    assert not decide([(0, 40)], bs=12)[0], "block sizes that are not powers of two keep the direct kernel"
    monkeypatch.setattr(kv_dequant, "MAX_COPY_ELEMS", 1000)
    assert not decide([(0, 40)])[0], "past the size cap the cache is read directly"
