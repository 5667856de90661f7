"""linear, W4A16 (AWQ packing), per-token int8 quantization and W8A8 vs the reference."""
from __future__ import annotations

import torch

from halinfer.core.ops import Ops
from halinfer.core.ops.quant import awq_pack, awq_unpack

from .checks import TOL, assert_close, assert_within, dirty_allocator, ref, rms, untouched
from .params import case, conformance

REF = Ops()
HALF = (torch.float16, torch.bfloat16)   # W4A16 / W8A8 activations, per their contracts


def _gemm_cases(shapes):
    return [case(f"T{t}_K{k}_N{n}{'_bias' if b else ''}", T=t, K=k, N=n, bias=b)
            for t, k, n in shapes for b in (False, True)]


LINEAR_CASES = _gemm_cases([(1, 64, 64), (7, 67, 33), (1000, 67, 129), (16, 4096, 256)])


@conformance("linear", LINEAR_CASES)
def test_linear(prov, dtype, case, gen):
    dev = prov.device
    x = torch.randn(case.T, case.K, generator=gen).to(dev, dtype)
    w = (torch.randn(case.N, case.K, generator=gen) / case.K ** 0.5).to(dev, dtype)
    b = torch.randn(case.N, generator=gen).to(dev, dtype) if case.bias else None
    dirty_allocator(dev, case.T * case.N * x.element_size())
    with untouched(x=x, weight=w):
        out = prov.ops.linear(x, w, b)
    expect = REF.linear(ref(x), ref(w), ref(b))
    assert out.dtype == dtype
    assert_close(out, expect, dtype, factor=2, scale=rms(expect))


# ---- W4A16 ------------------------------------------------------------------------

def random_awq(K, N, group, dtype, gen):
    """(qweight, scales, qzeros, q ints [K, N], zero ints [K/g, N]) from random 4-bit ints."""
    q = torch.randint(0, 16, (K, N), generator=gen)
    z = torch.randint(0, 16, (K // group, N), generator=gen)
    s = (torch.rand(K // group, N, generator=gen) * 0.02 + 0.005).to(dtype)
    return awq_pack(q), s, awq_pack(z), q, z


W4_CASES = [case(f"T{t}_K{k}_N{n}_g{g}{'_bias' if b else ''}", T=t, K=k, N=n, group=g, bias=b)
            for t, k, n, g, b in [(1, 128, 64, 32, False), (7, 256, 72, 64, True), (33, 512, 256, 128, False),
                                  (1000, 128, 64, 128, True), (3, 4096, 128, 128, False)]]


@conformance("w4a16_linear", W4_CASES, dtypes=HALF)
def test_w4a16_linear(prov, dtype, case, gen):
    dev = prov.device
    qw, s, qz, _, _ = random_awq(case.K, case.N, case.group, dtype, gen)
    x = torch.randn(case.T, case.K, generator=gen).to(dtype)
    b = torch.randn(case.N, generator=gen).to(dtype) if case.bias else None
    xd, qwd, sd, qzd, bd = (None if t is None else t.to(dev) for t in (x, qw, s, qz, b))
    with untouched(x=xd, qweight=qwd, scales=sd, qzeros=qzd):
        out = prov.ops.w4a16_linear(xd, qwd, sd, qzd, case.group, bd)
    expect = REF.w4a16_linear(ref(x), qw, ref(s), qz, case.group, ref(b))
    assert out.dtype == dtype
    assert_close(out, expect, dtype, factor=2, scale=rms(expect))


NORMED_CASES = [case(f"T{t}_K{k}_N{n}_g{g}{'_bias' if b else ''}", T=t, K=k, N=n, group=g, bias=b)
                for t, k, n, g, b in [(1, 128, 64, 32, False), (1, 4096, 128, 128, True), (1, 320, 72, 64, True),
                                      (5, 256, 48, 64, False)]]


@conformance("w4a16_linear_normed", NORMED_CASES, dtypes=HALF)
def test_w4a16_linear_normed(prov, dtype, case, gen):
    """A deferred norm's linear (core/ops/deferred.py): rms_norm(x + residual) * weight, then
    W4A16; the new residual stream x + residual exactly."""
    from halinfer.core.ops.deferred import deferred

    dev = prov.device
    qw, s, qz, _, _ = random_awq(case.K, case.N, case.group, dtype, gen)
    x = (torch.randn(case.T, case.K, generator=gen) * 2).to(dtype)
    r = torch.randn(case.T, case.K, generator=gen).to(dtype)
    nw = (1 + 0.2 * torch.randn(case.K, generator=gen)).to(dtype)
    b = torch.randn(case.N, generator=gen).to(dtype) if case.bias else None
    xd, rd, nwd, qwd, sd, qzd, bd = (None if t is None else t.to(dev) for t in (x, r, nw, qw, s, qz, b))
    xn, stream = deferred(xd, rd, nwd, 1e-6)
    with untouched(x=xd, residual=rd, weight=nwd, qweight=qwd, scales=sd, qzeros=qzd):
        out = prov.ops.w4a16_linear_normed(xn, qwd, sd, qzd, case.group, bd)
    y, s_ref = REF.rms_norm(ref(x), ref(nw), 1e-6, ref(r))
    expect = REF.w4a16_linear(y, qw, ref(s), qz, case.group, ref(b))
    assert out.dtype == dtype and out.shape == (case.T, case.N)
    assert_close(out, expect, dtype, factor=2, scale=rms(expect))
    assert torch.equal(stream.cpu(), s_ref.to(dtype)), "the new residual stream is x + residual in the dtype"


@conformance("w4a16_linear_gated", NORMED_CASES, dtypes=HALF)
def test_w4a16_linear_gated(prov, dtype, case, gen):
    """A deferred activation's linear (core/ops/deferred.py): act_and_mul(h, "silu"), then W4A16."""
    from halinfer.core.ops.deferred import GatedInput

    dev = prov.device
    qw, s, qz, _, _ = random_awq(case.K, case.N, case.group, dtype, gen)
    h = (torch.randn(case.T, 2 * case.K, generator=gen) * 2).to(dtype)
    b = torch.randn(case.N, generator=gen).to(dtype) if case.bias else None
    hd, qwd, sd, qzd, bd = (None if t is None else t.to(dev) for t in (h, qw, s, qz, b))
    with untouched(h=hd, qweight=qwd, scales=sd, qzeros=qzd):
        out = prov.ops.w4a16_linear_gated(GatedInput(hd, "silu"), qwd, sd, qzd, case.group, bd)
    expect = REF.w4a16_linear(REF.act_and_mul(ref(h), "silu").to(dtype).float(), qw, ref(s), qz, case.group, ref(b))
    assert out.dtype == dtype and out.shape == (case.T, case.N)
    assert_close(out, expect, dtype, factor=2, scale=rms(expect))


def test_awq_pack_round_trips():
    g = torch.Generator().manual_seed(6)
    v = torch.randint(0, 16, (9, 64), generator=g)
    packed = awq_pack(v)
    assert packed.dtype == torch.int32 and packed.shape == (9, 8)
    assert torch.equal(awq_unpack(packed), v)
    assert torch.equal(awq_pack(awq_unpack(packed)), packed)


def test_awq_pack_puts_columns_in_autoawq_nibble_order():
    # AutoAWQ's GEMM packing: nibble i of packed column c holds output column 8c + [0,2,4,6,1,3,5,7][i].
    order = [0, 2, 4, 6, 1, 3, 5, 7]
    for col in range(16):
        v = torch.zeros(1, 16, dtype=torch.int64)
        v[0, col] = 0xB
        word = int(awq_pack(v)[0, col // 8]) & 0xFFFFFFFF
        assert word == 0xB << (4 * order.index(col % 8)), f"column {col}"
        assert int(awq_pack(v)[0, 1 - col // 8]) == 0


def test_reference_w4a16_is_x_times_dequantized_weight():
    g = torch.Generator().manual_seed(7)
    qw, s, qz, q, z = random_awq(256, 40, 64, torch.float32, g)
    x, b = torch.randn(5, 256, generator=g), torch.randn(40, generator=g)
    w = (q - z.repeat_interleave(64, 0)).double() * s.double().repeat_interleave(64, 0)
    torch.testing.assert_close(REF.w4a16_linear(x, qw, s, qz, 64, b).double(), x.double() @ w + b.double(),
                               atol=1e-4, rtol=1e-4)


# ---- per-token int8 and W8A8 ----------------------------------------------------------

Q8_CASES = [case(f"T{t}_K{k}{'_zero_row' if zr else ''}", T=t, K=k, zero_row=zr)
            for t, k, zr in [(1, 64, False), (7, 67, True), (1000, 67, False), (3, 4096, False)]]


def _assert_int8_quant(q, s, x, what):
    """Independent of any reference: symmetric, max |q| = 127 per non-zero row, within half a step."""
    q, s, x = q.cpu(), s.cpu().float(), ref(x)
    assert q.dtype == torch.int8 and s.dtype == torch.float32, f"{what}: dtypes {q.dtype}, {s.dtype}"
    torch.testing.assert_close(s, x.abs().amax(-1).clamp(min=1e-8) / 127, atol=1e-12, rtol=1e-5)
    assert bool(((q.float() * s[:, None] - x).abs() <= s[:, None] * 0.501 + 1e-9).all()), f"{what}: off by > half a step"
    nz = x.abs().amax(-1) > 0
    assert bool((q[nz].abs().amax(-1) >= 126).all()), f"{what}: the row maximum must map to +-127"


@conformance("quant_per_token_int8", Q8_CASES)
def test_quant_per_token_int8(prov, dtype, case, gen):
    x = (torch.randn(case.T, case.K, generator=gen) * 4).to(dtype)
    if case.zero_row:
        x[case.T // 2] = 0
    xd = x.to(prov.device)
    with untouched(x=xd):
        q, s = prov.ops.quant_per_token_int8(xd)
    _assert_int8_quant(q, s, x, "provider")
    rq, rs = REF.quant_per_token_int8(ref(x))
    torch.testing.assert_close(s.cpu(), rs, atol=1e-12, rtol=1e-5)
    diff = (q.cpu().int() - rq.int()).abs()
    # Only exact .5 ties may round differently (half-even vs half-away), and only by one.
    assert int(diff.max()) <= 1 and float((diff > 0).float().mean()) < 0.01


def test_reference_quant_per_token_int8_contract():
    g = torch.Generator().manual_seed(8)
    x = torch.randn(9, 67, generator=g) * 10
    x[3] = 0
    q, s = REF.quant_per_token_int8(x)
    _assert_int8_quant(q, s, x, "reference")


W8_CASES = _gemm_cases([(1, 64, 64), (7, 67, 33), (1000, 128, 72), (5, 4096, 256)])


@conformance("w8a8_linear", W8_CASES, dtypes=HALF)
def test_w8a8_linear(prov, dtype, case, gen):
    dev = prov.device
    x = torch.randn(case.T, case.K, generator=gen).to(dtype)
    w = torch.randint(-127, 128, (case.N, case.K), generator=gen, dtype=torch.int8)
    ws = torch.rand(case.N, generator=gen) * 1e-3 + 1e-4
    b = torch.randn(case.N, generator=gen).to(dtype) if case.bias else None
    xd, wd, wsd, bd = (None if t is None else t.to(dev) for t in (x, w, ws, b))
    with untouched(x=xd, weight=wd, weight_scale=wsd):
        out = prov.ops.w8a8_linear(xd, wd, wsd, bd)
    expect = REF.w8a8_linear(ref(x), w, ws, ref(b))
    assert out.dtype == dtype
    # The dtype's rounding, plus two activations a quantization step off (a kernel may divide
    # by the scale in half precision and round a near-tie the other way; see quant_per_token_int8).
    atol, rtol = TOL[dtype]
    x_step = ref(x).abs().amax(-1) / 127
    slack = 2 * x_step[:, None] * (ws * w.float().abs().amax(-1))[None, :]
    assert_within(out, expect, 2 * (atol * rms(expect) + rtol * expect.abs()) + slack, "w8a8 output")


def test_reference_w8a8_approximates_the_dense_product():
    # The quantized product is within the activation quantization error of x @ (W * ws)^T.
    g = torch.Generator().manual_seed(9)
    x = torch.randn(6, 512, generator=g)
    w = torch.randint(-127, 128, (48, 512), generator=g, dtype=torch.int8)
    ws = torch.rand(48, generator=g) * 1e-3 + 1e-4
    dense = x.double() @ (w.double() * ws.double()[:, None]).t()
    got = REF.w8a8_linear(x, w, ws).double()
    step = x.abs().amax(-1, keepdim=True).double() / 127                      # per-row quantization step
    bound = 0.5 * step * (w.double().abs() * ws.double()[:, None]).sum(-1)[None, :]
    assert bool(((got - dense).abs() <= bound + 1e-6).all())
    assert float((got - dense).abs().max()) > 0   # it does quantize
