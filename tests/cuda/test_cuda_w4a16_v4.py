"""The one-dot-a-trip AWQ GEMV (kernels/triton/w4a16_v4.py) against the core reference, on
test_cuda_w4a16_v3.py's cases (partial N tiles, K not a power of two, groups 32 to one over K,
M = 1 / 2 / 5 / 16, bias on and off), its split-K reduction (counters re-armed), and the
selector (HALINFER_W4A16_GEMV=v4).  Interpreter targets run on the CPU (fp16)."""
from __future__ import annotations

import pytest

from test_cuda_w4a16_v3 import CASES, TOL, _inputs, _rel



@pytest.mark.parametrize("bias", [False, True], ids=["nobias", "bias"])
@pytest.mark.parametrize("M,K,N,group", CASES, ids=[f"m{c[0]}_k{c[1]}_n{c[2]}_g{c[3]}" for c in CASES])
def test_v4_matches_reference(half_target, gen, M, K, N, group, bias):
    from halinfer.kernels.triton import w4a16_v4

    dev, dt = half_target.device, half_target.dtype
    x, qw, s, qz, b, want = _inputs(M, K, N, group, dt, dev, gen, bias)
    got = w4a16_v4.gemv(x, qw, qz, s, group, b, N)
    assert got is not None and got.shape == (M, N) and got.dtype == dt
    assert _rel(got, want) < TOL[dt], f"rel err {_rel(got, want):.2e}"


def test_v4_split_k_reduces_and_rearms(half_target, gen, monkeypatch):
    from halinfer.kernels.triton import w4a16, w4a16_v4

    dev, dt = half_target.device, half_target.dtype
    if not half_target.interp:
        monkeypatch.setitem(w4a16_v4.CONFIG_OVERRIDE, "config", (128, 64, 4, 4, 4))
    cfgs = []
    real = w4a16_v4.config
    monkeypatch.setattr(w4a16_v4, "config", lambda *a: cfgs.append(real(*a)) or cfgs[-1])
    K, N, group = 960, 104, 64
    for _ in range(2):
        x, qw, s, qz, b, want = _inputs(1, K, N, group, dt, dev, gen, True)
        got = w4a16_v4.gemv(x, qw, qz, s, group, b, N)
        assert _rel(got, want) < TOL[dt], f"rel err {_rel(got, want):.2e}"
        assert int(w4a16._counters(x.device, 1).abs().sum()) == 0, "tile counters not re-armed"
    assert cfgs[0][2] > 1, cfgs[0]


def test_v4_selected_by_env(half_target, ops, gen, monkeypatch):
    from halinfer.kernels.triton import w4a16_v4

    dev, dt = half_target.device, half_target.dtype
    monkeypatch.setenv("HALINFER_W4A16_GEMV", "v4")
    ran = []
    real = w4a16_v4.gemv
    monkeypatch.setattr(w4a16_v4, "gemv", lambda *a: ran.append(1) or real(*a))
    for M in (1, 5, 16):
        x, qw, s, qz, b, want = _inputs(M, 256, 48, 64, dt, dev, gen, True)
        got = ops.w4a16_linear(x, qw, s, qz, 64, bias=b)
        assert _rel(got, want) < TOL[dt]
    assert len(ran) == 3, "HALINFER_W4A16_GEMV=v4 did not reach the v4 GEMV"
