"""GPTQ (4/8-bit, g_idx) and FP8 (block / channel / static) GEMMs vs the reference, and the
references vs independent definitions (packing written value by value from the layout)."""
from __future__ import annotations

import torch

from halinfer.core.ops import Ops
from halinfer.core.ops.gptq import gptq_pack_cols, gptq_pack_rows, gptq_unpack_cols, gptq_unpack_rows
from halinfer.core.ops.gptq import gptq_v1_to_v2_zeros
from halinfer.testing.quant_ckpt import pack_gptq_cols, pack_gptq_rows

from .checks import assert_close, rms, untouched
from .params import case, conformance

REF = Ops()
HALF = (torch.float16, torch.bfloat16)


def random_gptq(K, N, group, bits, act_order, dtype, gen):
    top = (1 << bits) - 1
    q = torch.randint(0, top + 1, (K, N), generator=gen)
    G = -(-K // group)
    z = torch.randint(0, top + 1, (G, N), generator=gen)
    s = (torch.rand(G, N, generator=gen) * 0.02 + 0.005).to(dtype)
    g_idx = (torch.arange(K) // group).to(torch.int32)
    if act_order:
        g_idx = g_idx[torch.randperm(K, generator=gen)]
    return pack_gptq_rows(q, bits), pack_gptq_cols(z, bits), s, g_idx, q, z


GPTQ_CASES = [case(f"T{t}_K{k}_N{n}_g{g}_b{b}{'_actorder' if a else ''}{'_bias' if bi else ''}", T=t, K=k, N=n,
                   group=g, bits=b, act=a, bias=bi)
              for t, k, n, g, b, a, bi in [(1, 128, 64, 32, 4, False, False), (7, 256, 72, 64, 4, True, True),
                                          (33, 128, 40, 128, 8, False, True), (3, 512, 128, 128, 4, True, False),
                                          (5, 96, 24, 32, 8, True, False),
                                          (16, 320, 56, 64, 4, True, False), (300, 192, 40, 64, 4, True, True)]]


@conformance("gptq_linear", GPTQ_CASES, dtypes=HALF)
def test_gptq_linear(prov, dtype, case, gen):
    """As a model runs it: the table's prepare_gptq once on the checkpoint's tensors, then its
    gptq_linear on what that returned (Ops.prepare_gptq's contract), against the reference on
    the original tensors."""
    dev = prov.device
    qw, qz, s, gi, _, _ = random_gptq(case.K, case.N, case.group, case.bits, case.act, dtype, gen)
    x = torch.randn(case.T, case.K, generator=gen).to(dtype)
    b = torch.randn(case.N, generator=gen).to(dtype) if case.bias else None
    args = [t.to(dev) for t in (x, qw, qz, s, gi)]
    with untouched(x=args[0], qweight=args[1], qzeros=args[2], scales=args[3], g_idx=args[4]):
        prepared = prov.ops.prepare_gptq(*args[1:], case.bits)
        assert {"qweight", "qzeros", "scales", "g_idx"} <= set(prepared), sorted(prepared)
        out = prov.ops.gptq_linear(args[0], **prepared, bits=case.bits, bias=None if b is None else b.to(dev))
    expect = REF.gptq_linear(x.float(), qw, qz, s.float(), gi, case.bits, None if b is None else b.float())
    assert out.dtype == dtype
    assert_close(out, expect, dtype, factor=2, scale=rms(expect))


def test_reference_prepare_gptq_is_the_identity():
    """Tables that do not re-lay GPTQ (the reference, CpuOps, every plugin that leaves
    prepare_gptq alone) get their inputs back, the very tensors, and no extras."""
    from halinfer.plugins.cpu.ops import CpuOps

    g = torch.Generator().manual_seed(2)
    qw, qz, s, gi, _, _ = random_gptq(64, 16, 32, 4, True, torch.float16, g)
    for ops in (REF, CpuOps()):
        out = ops.prepare_gptq(qw, qz, s, gi, 4)
        assert set(out) == {"qweight", "qzeros", "scales", "g_idx"}
        assert out["qweight"] is qw and out["qzeros"] is qz and out["scales"] is s and out["g_idx"] is gi


def test_gptq_unpack_reads_the_layout_value_by_value():
    g = torch.Generator().manual_seed(3)
    for bits in (4, 8):
        q = torch.randint(0, 1 << bits, (64, 24), generator=g)
        assert torch.equal(gptq_unpack_rows(pack_gptq_rows(q, bits), bits), q)
        assert torch.equal(gptq_unpack_cols(pack_gptq_cols(q, bits), bits), q)
        assert torch.equal(gptq_pack_rows(q, bits), pack_gptq_rows(q, bits))
        assert torch.equal(gptq_pack_cols(q, bits), pack_gptq_cols(q, bits))


def test_gptq_v1_zeros_are_stored_minus_one():
    # symmetric 4-bit: v1 stores 7 in every nibble (0x77777777), the true zero is 8
    z = gptq_v1_to_v2_zeros(torch.full((2, 3), 0x77777777, dtype=torch.int32), 4)
    assert bool((gptq_unpack_cols(z, 4) == 8).all())
    # a zero of 0 is stored as -1 mod 16 = 15 and reads back as 0; 8-bit likewise
    assert bool((gptq_unpack_cols(gptq_v1_to_v2_zeros(torch.full((1, 1), -1, dtype=torch.int32), 4), 4) == 0).all())
    assert bool((gptq_unpack_cols(gptq_v1_to_v2_zeros(torch.full((1, 1), 0x7F7F7F7F, dtype=torch.int32), 8), 8)
                 == 0x80).all())


def test_reference_gptq_is_x_times_dequantized_weight_with_g_idx():
    g = torch.Generator().manual_seed(4)
    qw, qz, s, gi, q, z = random_gptq(96, 16, 32, 4, True, torch.float32, g)
    x = torch.randn(3, 96, generator=g)
    w = torch.stack([(q[k] - z[gi[k]]).double() * s[gi[k]].double() for k in range(96)])
    torch.testing.assert_close(REF.gptq_linear(x, qw, qz, s, gi, 4).double(), x.double() @ w, atol=1e-4, rtol=1e-4)


# ---- FP8 ------------------------------------------------------------------------------

FP8_CASES = [case(f"T{t}_K{k}_N{n}_bk{bk}{'_static' if st else ''}{'_bias' if bi else ''}", T=t, K=k, N=n, bk=bk,
                  static=st, bias=bi)
             for t, k, n, bk, st, bi in [(1, 256, 64, 128, False, False), (7, 320, 72, 128, False, True),
                                        (33, 96, 40, 96, False, False), (5, 64, 48, 64, True, True),
                                        (2, 512, 128, 128, False, False)]]


def random_fp8(K, N, bk, gen):
    w = (torch.randn(N, K, generator=gen) * 100).clamp(-448, 448).to(torch.float8_e4m3fn)
    ws = torch.rand(N, -(-K // bk), generator=gen) * 1e-3 + 1e-4
    return w, ws


@conformance("fp8_linear", FP8_CASES, dtypes=HALF)
def test_fp8_linear(prov, dtype, case, gen):
    dev = prov.device
    w, ws = random_fp8(case.K, case.N, case.bk, gen)
    x = torch.randn(case.T, case.K, generator=gen).to(dtype)
    b = torch.randn(case.N, generator=gen).to(dtype) if case.bias else None
    isc = torch.tensor(0.01) if case.static else None
    with untouched(x=x.to(dev)):
        out = prov.ops.fp8_linear(x.to(dev), w.to(dev), ws.to(dev), case.bk, None if b is None else b.to(dev),
                                  None if isc is None else isc.to(dev))
    expect = REF.fp8_linear(x, w, ws, case.bk, b, isc).float()
    assert out.dtype == dtype
    # one fp8 step of an activation (a kernel may round x / s a last bit apart)
    assert_close(out, expect, dtype, factor=4, scale=rms(expect))


def test_reference_fp8_block_matches_the_blockwise_definition():
    # y = sum over 128-blocks of (x_q . w_q) * s_x * s_w, with s_x = max(absmax, 1e-10) / 448 per token-group
    g = torch.Generator().manual_seed(5)
    T, K, N, bk = 3, 300, 20, 128
    x = torch.randn(T, K, generator=g)
    x[1, :128] = 0                                   # an all-zero group takes the 1e-10 floor
    w, ws = random_fp8(K, N, bk, g)
    want = torch.zeros(T, N, dtype=torch.float64)
    for t in range(T):
        for kb in range(0, K, bk):
            part = x[t, kb:kb + bk]
            sx = max(float(part.abs().max()), 1e-10) / 448
            xq = (part / sx).to(torch.float8_e4m3fn).double()
            want[t] += (w[:, kb:kb + bk].double() @ xq) * sx * ws[:, kb // bk].double()
    torch.testing.assert_close(REF.fp8_linear(x, w, ws, bk).double(), want, atol=1e-4, rtol=1e-4)
