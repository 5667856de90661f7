"""rms_norm_quant (RMSNorm + a linear's dynamic activation quantization) and the 8-bit GEMMs
that take its output (w8a8_linear_prequant, fp8_linear_prequant) vs the reference.

rms_norm_quant's contract is the composition "this table's rms_norm, then the linear's
quantization", so besides the float checks against the reference each provider's q and
scales must be the quantization of its own rms_norm output: exactly on the CPU, and on a GPU
up to the norm's last-bit rounding (``checks.same_quant_bits``), so a fused model gives the numbers of an
unfused one."""
from __future__ import annotations

import torch

from halinfer.core.ops import ActQuant, Ops, QuantizedActs
from halinfer.core.ops.fp8 import FP8_MAX, FP8_MIN_SCALE, quant_per_token_group_fp8
from halinfer.core.ops.norm_quant import quantize_acts

from .checks import TOL, assert_close, quant_bytes, same_quant_bits, ref, rms, untouched
from .params import case, conformance
from .test_quant_gemm import random_fp8

REF = Ops()
HALF = (torch.float16, torch.bfloat16)

# (T, H, kind, group (0: whole row for fp8), residual)
NQ_SHAPES = [(1, 64, "int8", 0, False), (7, 67, "int8", 0, True), (70, 300, "int8", 0, True),
             (33, 4096, "int8", 0, False),
             (1, 256, "fp8", 128, False), (7, 300, "fp8", 128, True), (70, 384, "fp8", 128, True),
             (5, 1000, "fp8", 128, False), (3, 67, "fp8", 0, False), (9, 512, "fp8", 0, True),
             (17, 130, "fp8", 64, True),
             (5, 200, "fp8", 96, True)]     # a group that is no power of two (cuda: the declared fallback)
NQ_CASES = [case(f"T{t}_H{h}_{k}{'_g' + str(g) if g else ''}{'_res' if res else ''}", T=t, H=h, kind=k, group=g,
                 residual=res, features=(k,) + (("residual",) if res else ()))
            for t, h, k, g, res in NQ_SHAPES]


def _spec(case):
    return ActQuant("int8") if case.kind == "int8" else ActQuant("fp8", case.group or case.H)


@conformance("rms_norm_quant", NQ_CASES)
def test_rms_norm_quant(prov, dtype, case, gen):
    dev, spec = prov.device, _spec(case)
    x = (torch.randn(case.T, case.H, generator=gen) * 3 + 0.5).to(dev, dtype)
    w = (1 + 0.1 * torch.randn(case.H, generator=gen)).to(dev, dtype)
    r = torch.randn(case.T, case.H, generator=gen).to(dev, dtype) if case.residual else None
    with untouched(x=x, weight=w, residual=r):
        out = prov.ops.rms_norm_quant(x, w, 1e-6, spec, residual=r)
    if case.residual:
        assert isinstance(out, tuple) and len(out) == 2, "with residual: (QuantizedActs, x + residual)"
        qa, s = out
    else:
        qa, s = out, None
    assert isinstance(qa, QuantizedActs) and qa.spec == spec and qa.rows == case.T and qa.dtype == dtype
    q, sc = qa.values()
    G = -(-case.H // min(spec.group, case.H)) if spec.kind == "fp8" else None
    assert q.shape == (case.T, case.H) and q.dtype == (torch.int8 if spec.kind == "int8" else torch.float8_e4m3fn)
    assert sc.dtype == torch.float32 and sc.shape == ((case.T,) if spec.kind == "int8" else (case.T, G))
    if qa.q.shape[0] > case.T:   # padding rows, as the contract allows for fp8
        assert spec.kind == "fp8" and not quant_bytes(qa.q[case.T:]).any()
        assert bool((qa.scale[case.T:].cpu() == torch.tensor(FP8_MIN_SCALE) / FP8_MAX).all())
    if qa.scales_col_major:
        assert qa.scale.stride() == (1, qa.q.shape[0])

    # 1. the same bits as this provider's unfused path: its rms_norm, then the linear's quantization
    plain = prov.ops.rms_norm(x, w, 1e-6, residual=r)
    y = plain[0] if case.residual else plain
    if case.residual:
        assert torch.equal(s.cpu(), plain[1].cpu()), "new residual differs from rms_norm's"
    if spec.kind == "int8":
        uq, us = prov.ops.quant_per_token_int8(y)
    else:
        uq, us = quant_per_token_group_fp8(y.cpu(), min(spec.group, case.H))
    same_quant_bits(prov, dtype, q, sc, uq.contiguous(), us, "rms_norm")

    # 2. against the float32 reference: the scales follow the reference norm's row maxima, and
    # q * scale is the reference norm's output within half a quantization step (+ the dtype's rounding)
    rx, rw, rr = ref(x), ref(w), ref(r)
    expect = REF.rms_norm(rx, rw, 1e-6, residual=rr)
    ey = expect[0] if case.residual else expect
    eq = quantize_acts(REF, ey, spec)
    atol, rtol = TOL[dtype]
    assert_close(sc, eq.scale, dtype, factor=2, what="scales")
    if spec.kind == "int8":
        step = sc.cpu()[:, None]
        quant_err = 0.5 * step
    else:   # e4m3: half a step is 2**-4 of the value (3 mantissa bits), 2**-10 of the scale's unit below 2**-6
        step = sc.cpu().repeat_interleave(min(spec.group, case.H), 1)[:, :case.H]
        quant_err = ey.abs() * 2 ** -4 + step * 2 ** -10
    err = (q.cpu().float() * step - ey).abs()
    bound = quant_err * 1.01 + 2 * (atol + rtol * ey.abs())
    assert bool((err <= bound).all()), f"dequantized output off the reference norm by up to {float(err.max()):.3g}"


PQ_CASES = [case(f"T{t}_K{k}_N{n}_{kind}{'_g' + str(g) if g else ''}{'_colmajor' if cm else ''}", T=t, K=k, N=n,
                 kind=kind, group=g, col_major=cm)
            for t, k, n, kind, g, cm in [(1, 64, 64, "int8", 0, False), (7, 67, 33, "int8", 0, False),
                                        (70, 256, 72, "int8", 0, False),
                                        (1, 256, 64, "fp8", 128, False), (7, 320, 72, "fp8", 128, True),
                                        (33, 256, 128, "fp8", 128, True), (5, 96, 40, "fp8", 0, False)]]


def _padded_col_major(qa: QuantizedActs, pad: int) -> QuantizedActs:
    """The same activations in the layout the contract lets a backend hand over: rows padded
    (zeros, smallest scale), scales column-major."""
    T, K = qa.shape
    Tp = -(-T // pad) * pad
    q = torch.zeros((Tp, K), dtype=torch.uint8)
    q[:T] = qa.q.view(torch.uint8)
    s = torch.full((Tp, qa.scale.shape[1]), FP8_MIN_SCALE / FP8_MAX)
    s[:T] = qa.scale
    return QuantizedActs(q.view(torch.float8_e4m3fn), s.t().contiguous().t(), qa.spec, T, qa.dtype, True)


def _to(qa: QuantizedActs, dev) -> QuantizedActs:
    q, s = qa.q.to(dev), qa.scale.to(dev)
    if qa.scales_col_major:
        s = qa.scale.t().contiguous().to(dev).t()
    return QuantizedActs(q, s, qa.spec, qa.rows, qa.dtype, qa.scales_col_major)


@conformance("w8a8_linear_prequant", [c for c in PQ_CASES if c.kind == "int8"], dtypes=HALF)
def test_w8a8_linear_prequant(prov, dtype, case, gen):
    x = torch.randn(case.T, case.K, generator=gen).to(dtype)
    w = torch.randint(-127, 128, (case.N, case.K), generator=gen, dtype=torch.int8)
    ws = torch.rand(case.N, generator=gen) * 1e-3 + 1e-4
    b = torch.randn(case.N, generator=gen).to(dtype)
    qa = quantize_acts(REF, x, ActQuant("int8"))
    out = prov.ops.w8a8_linear_prequant(_to(qa, prov.device), w.to(prov.device), ws.to(prov.device),
                                        b.to(prov.device))
    expect = REF.w8a8_linear_prequant(qa, w, ws, ref(b))
    assert out.dtype == dtype and out.shape == (case.T, case.N)
    assert_close(out, expect.float(), dtype, factor=2, scale=rms(expect))
    # the GEMM half of w8a8_linear: the reference composition is w8a8_linear itself
    assert torch.equal(expect, REF.w8a8_linear(x, w, ws, b))


@conformance("fp8_linear_prequant", [c for c in PQ_CASES if c.kind == "fp8"], dtypes=HALF)
def test_fp8_linear_prequant(prov, dtype, case, gen):
    bk = case.group or case.K
    w, ws = random_fp8(case.K, case.N, bk, gen)
    x = torch.randn(case.T, case.K, generator=gen).to(dtype)
    b = torch.randn(case.N, generator=gen).to(dtype)
    qa = quantize_acts(REF, x, ActQuant("fp8", bk))
    given = _padded_col_major(qa, 4) if case.col_major else qa
    out = prov.ops.fp8_linear_prequant(_to(given, prov.device), w.to(prov.device), ws.to(prov.device), bk,
                                       b.to(prov.device))
    expect = REF.fp8_linear_prequant(qa, w, ws, bk, ref(b)).float()
    assert out.dtype == dtype and out.shape == (case.T, case.N)
    assert_close(out, expect, dtype, factor=4, scale=rms(expect))
    assert torch.equal(REF.fp8_linear_prequant(given, w, ws, bk, b), REF.fp8_linear(x, w, ws, bk, b))
