"""w4a16_linear_normed and w4a16_linear_gated on the Triton table (kernels/triton/w4a16.py awq_linear_normed: the v3a
GEMV norming its own input, core/ops/deferred.py) against the reference composition
rms_norm then w4a16_linear: the output within the GEMV's tolerance, the new residual stream
x + residual bit for bit, the fused kernel taken at M = 1 (several K splits, partial N tiles,
K not a power of two, one group over K), and M = 2 composed; the gated form (the activation
computed in down_proj's x loads: awq_linear_gated) against act_and_mul then w4a16_linear, for
each activation.  Interpreter targets run on the
CPU (fp16), gpu targets compile."""
from __future__ import annotations

import pytest
import torch

from halinfer.core.ops import Ops
from halinfer.core.ops.deferred import GatedInput, deferred

from test_cuda_w4a16_v3 import TOL, _inputs, _rel

REF = Ops()
CASES = [  # M, K, N, group
    (1, 384, 40, 128),
    (1, 192, 200, 64),
    (1, 448, 72, 32),
    (1, 96, 56, 96),
    (2, 256, 48, 64),     # more than one row: composed, not fused
]



@pytest.mark.parametrize("bias", [False, True], ids=["nobias", "bias"])
@pytest.mark.parametrize("M,K,N,group", CASES, ids=[f"m{c[0]}_k{c[1]}_n{c[2]}_g{c[3]}" for c in CASES])
def test_normed_matches_composition(half_target, ops, gen, monkeypatch, M, K, N, group, bias):
    from halinfer.kernels.triton import w4a16_v3

    dev, dt = half_target.device, half_target.dtype
    x, qw, s, qz, b, _ = _inputs(M, K, N, group, dt, dev, gen, bias)
    r = torch.randn(M, K, generator=gen).to(dev, dt)
    nw = (1 + 0.2 * torch.randn(K, generator=gen)).to(dev, dt)
    fused = []
    real = w4a16_v3.gemv
    monkeypatch.setattr(w4a16_v3, "gemv", lambda *a, **k: fused.append(k.get("norm") is not None) or real(*a, **k))
    xn, stream = deferred(x, r, nw, 1e-5)
    got = ops.w4a16_linear_normed(xn, qw, s, qz, group, bias=b)
    assert (True in fused) == (M == 1), f"fused kernel taken: {fused} at M = {M}"
    # reference: the float32 composition on the CPU, from the same (rounded) inputs
    ry, rs = REF.rms_norm(x.cpu().float(), nw.cpu().float(), 1e-5, r.cpu().float())
    want = REF.w4a16_linear(ry.to(dt).float(), qw.cpu(), s.cpu().float(), qz.cpu(), group,
                            bias=None if b is None else b.cpu().float())
    assert got.shape == (M, N) and got.dtype == dt
    assert _rel(got, want) < TOL[dt], f"rel err {_rel(got, want):.2e}"
    assert torch.equal(stream.cpu(), (x.cpu().float() + r.cpu().float()).to(dt)), "new residual stream differs"


def test_split_k_programs_all_see_the_whole_row(half_target, ops, gen, monkeypatch):
    """Four K splits: every split's program norms with the whole row's rstd (a split that summed
    only its own K range would be off by far more than the tolerance)."""
    from halinfer.kernels.triton import w4a16_v3

    dev, dt = half_target.device, half_target.dtype
    if not half_target.interp:
        monkeypatch.setitem(w4a16_v3.CONFIG_OVERRIDE, "config", (128, 64, 4, 4, 4))
    K, N, group = 960, 104, 64
    x, qw, s, qz, b, _ = _inputs(1, K, N, group, dt, dev, gen, True)
    x[:, : K // 4] *= 8          # the splits' own sums of squares differ a lot
    r = torch.randn(1, K, generator=gen).to(dev, dt)
    nw = (1 + 0.2 * torch.randn(K, generator=gen)).to(dev, dt)
    xn, stream = deferred(x, r, nw, 1e-6)
    got = ops.w4a16_linear_normed(xn, qw, s, qz, group, bias=b)
    want = ops.w4a16_linear(ops.rms_norm(x, nw, 1e-6, r)[0], qw, s, qz, group, bias=b)
    assert _rel(got, want.cpu().float()) < TOL[dt]
    assert torch.equal(stream.cpu(), (x.cpu().float() + r.cpu().float()).to(dt))


@pytest.mark.parametrize("kind", ["silu", "gelu", "gelu_tanh"])
@pytest.mark.parametrize("M,K,N,group", CASES, ids=[f"m{c[0]}_k{c[1]}_n{c[2]}_g{c[3]}" for c in CASES])
def test_gated_matches_composition(half_target, ops, gen, monkeypatch, M, K, N, group, kind):
    from halinfer.kernels.triton import w4a16_v3

    dev, dt = half_target.device, half_target.dtype
    _, qw, s, qz, b, _ = _inputs(M, K, N, group, dt, dev, gen, True)
    h = (torch.randn(M, 2 * K, generator=gen) * 2).to(dev, dt)
    fused = []
    real = w4a16_v3.gemv
    monkeypatch.setattr(w4a16_v3, "gemv", lambda *a, **k: fused.append(k.get("act") is not None) or real(*a, **k))
    got = ops.w4a16_linear_gated(GatedInput(h, kind), qw, s, qz, group, bias=b)
    assert (True in fused) == (M == 1), f"fused kernel taken: {fused} at M = {M}"
    a = ops.act_and_mul(h, kind)            # the table's own activation (the GEMV reproduces its bits)
    want = REF.w4a16_linear(a.cpu().float(), qw.cpu(), s.cpu().float(), qz.cpu(), group, bias=b.cpu().float())
    assert got.shape == (M, N) and got.dtype == dt
    assert _rel(got, want) < TOL[dt], f"rel err {_rel(got, want):.2e}"
