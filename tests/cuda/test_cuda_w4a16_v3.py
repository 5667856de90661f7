"""The v3 AWQ GEMV variants (kernels/triton/w4a16_v3.py) against the core reference: N an odd
multiple of 8 (a partial last N tile), K not a power of two, groups 32 / 64 / 128 and one group
over K (K then not a multiple of the K tile: masked tail), M = 1 (the 1-D x sum), 2, 5, 16,
bias on / off, several K splits (the last-program reduction, counters re-armed), and the
selector hook (env HALINFER_W4A16_GEMV) of w4a16._gemv.  Interpreter targets run on the CPU
(fp16; the variants refuse float32), gpu targets compile."""
from __future__ import annotations

import pytest
import torch

from halinfer.core.ops import Ops
from halinfer.core.ops.quant import awq_pack

REF = Ops()
TOL = {torch.float16: 4e-3, torch.bfloat16: 2e-2}

CASES = [  # M, K, N, group
    (1, 384, 40, 128),      # N = 5 x 8
    (1, 192, 200, 64),      # N = 25 x 8, K = 3 groups
    (2, 224, 72, 32),       # K = 7 groups
    (5, 320, 136, 64),
    (16, 384, 104, 128),
    (1, 96, 56, 96),        # one group over K; K tile 64: the last tile half masked
    (16, 160, 24, 160),
]


def _variants():
    from halinfer.kernels.triton import w4a16_v3
    return list(w4a16_v3.VARIANTS)


def _rel(a, b):
    return float((a.detach().cpu().float() - b).abs().max() / b.abs().max().clamp(min=1e-6))


def _inputs(M, K, N, group, dt, dev, gen, bias):
    q = torch.randint(0, 16, (K, N), generator=gen)
    z = torch.randint(0, 16, (K // group, N), generator=gen)
    q[:, 7::8] = 15         # the top nibble of every packed word: negative int32 / int16
    s = torch.rand(K // group, N, generator=gen) * 0.02 + 0.001
    x = torch.randn(M, K, generator=gen).to(dev, dt)
    b = torch.randn(N, generator=gen).to(dev, dt) if bias else None
    qw, qz = awq_pack(q), awq_pack(z)
    want = REF.w4a16_linear(x.cpu().float(), qw, s.to(dt).float(), qz, group,
                            bias=None if b is None else b.cpu().float())
    return x, qw.to(dev), s.to(dev, dt), qz.to(dev), b, want



@pytest.mark.parametrize("variant", _variants())
@pytest.mark.parametrize("bias", [False, True], ids=["nobias", "bias"])
@pytest.mark.parametrize("M,K,N,group", CASES, ids=[f"m{c[0]}_k{c[1]}_n{c[2]}_g{c[3]}" for c in CASES])
def test_v3_matches_reference(half_target, gen, variant, M, K, N, group, bias):
    from halinfer.kernels.triton import w4a16_v3

    dev, dt = half_target.device, half_target.dtype
    x, qw, s, qz, b, want = _inputs(M, K, N, group, dt, dev, gen, bias)
    got = w4a16_v3.gemv(variant, x, qw, qz, s, group, b, N)
    if M > w4a16_v3.MAX_M[variant]:
        assert got is None, "the variant took an M it does not handle"
        return
    assert got is not None, "the variant refused a case it takes"
    assert got.shape == (M, N) and got.dtype == dt
    assert _rel(got, want) < TOL[dt], f"rel err {_rel(got, want):.2e}"


@pytest.mark.parametrize("variant", _variants())
def test_v3_split_k_reduces_and_rearms(half_target, gen, monkeypatch, variant):
    """Four K splits over K = 960 (the last one shorter), N = 104 (partial last N tile), called
    twice: the last program of each N tile sums the partials; the counters end at 0."""
    from halinfer.kernels.triton import w4a16, w4a16_v3

    dev, dt = half_target.device, half_target.dtype
    if not half_target.interp:
        monkeypatch.setitem(w4a16_v3.CONFIG_OVERRIDE, "config", (256, 64, 4, 4, 4))
    cfgs = []
    real = w4a16_v3.config

    def spy(*a, **k):
        cfgs.append(real(*a, **k))
        return cfgs[-1]
    monkeypatch.setattr(w4a16_v3, "config", spy)
    K, N, group = 960, 104, 64
    for _ in range(2):
        x, qw, s, qz, b, want = _inputs(1, K, N, group, dt, dev, gen, True)
        got = w4a16_v3.gemv(variant, x, qw, qz, s, group, b, N)
        assert _rel(got, want) < TOL[dt], f"rel err {_rel(got, want):.2e}"
        assert int(w4a16._counters(x.device, 1).abs().sum()) == 0, "tile counters not re-armed"
    assert cfgs[0][2] > 1, cfgs[0]


@pytest.mark.parametrize("variant", _variants())
def test_v3_selected_by_env(half_target, ops, gen, monkeypatch, variant):
    """HALINFER_W4A16_GEMV=<variant> routes ops.w4a16_linear (M <= 16) to the variant."""
    from halinfer.kernels.triton import w4a16_v3

    dev, dt = half_target.device, half_target.dtype
    monkeypatch.setenv("HALINFER_W4A16_GEMV", variant)
    ran = []
    real = w4a16_v3.gemv

    def spy(*a, **k):
        y = real(*a, **k)
        ran.append(y is not None)
        return y
    monkeypatch.setattr(w4a16_v3, "gemv", spy)
    for M in (1, 5):
        ran.clear()
        x, qw, s, qz, b, want = _inputs(M, 256, 48, 64, dt, dev, gen, True)
        got = ops.w4a16_linear(x, qw, s, qz, 64, bias=b)
        # an M the variant does not take falls back to v2
        assert ran == [M <= w4a16_v3.MAX_M[variant]]
        assert _rel(got, want) < TOL[dt]
