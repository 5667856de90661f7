"""The CUDA-core M = 1 AWQ GEMV (kernels/triton/w4a16_v5.py) against the core reference, on
test_cuda_w4a16_v3.py's M = 1 cases plus K not a whole number of the default trip (the lane rows
shrink to fit) and groups 32 / 64 / 96 / 128 / one over K; its split-K reduction (counters
re-armed); its refusal of M > 1; and the selector (HALINFER_W4A16_GEMV=v5: M = 1 to v5, larger
M to v3a).  Interpreter targets run on the CPU (fp16)."""
from __future__ import annotations

import pytest

from test_cuda_w4a16_v3 import CASES, TOL, _inputs, _rel

V5_CASES = [c for c in CASES if c[0] == 1] + [
    (1, 448, 24, 64),       # K = 7 groups: not a whole number of 2-lane x 64-row trips
    (1, 640, 136, 32),      # N = 17 x 8
    (1, 288, 8, 288),       # one group over K, a single packed column
]


@pytest.fixture
def half_target(target):
    import torch
    if target.dtype == torch.float32:
        pytest.skip("the GEMV takes fp16 / bf16 activations")
    return target


@pytest.mark.parametrize("bias", [False, True], ids=["nobias", "bias"])
@pytest.mark.parametrize("M,K,N,group", V5_CASES, ids=[f"m{c[0]}_k{c[1]}_n{c[2]}_g{c[3]}" for c in V5_CASES])
def test_v5_matches_reference(half_target, gen, M, K, N, group, bias):
    from halinfer.kernels.triton import w4a16_v5

    dev, dt = half_target.device, half_target.dtype
    x, qw, s, qz, b, want = _inputs(M, K, N, group, dt, dev, gen, bias)
    got = w4a16_v5.gemv(x, qw, qz, s, group, b, N)
    assert got is not None and got.shape == (M, N) and got.dtype == dt
    assert _rel(got, want) < TOL[dt], f"rel err {_rel(got, want):.2e}"


def test_v5_refuses_more_rows(half_target, gen):
    from halinfer.kernels.triton import w4a16_v5

    dev, dt = half_target.device, half_target.dtype
    x, qw, s, qz, b, _ = _inputs(2, 256, 48, 64, dt, dev, gen, False)
    assert w4a16_v5.gemv(x, qw, qz, s, 64, b, 48) is None


def test_v5_split_k_reduces_and_rearms(half_target, gen, monkeypatch):
    from halinfer.kernels.triton import w4a16, w4a16_v5

    dev, dt = half_target.device, half_target.dtype
    if not half_target.interp:
        monkeypatch.setitem(w4a16_v5.CONFIG_OVERRIDE, "config", (256, 32, 2, 4, 4, 8))
    cfgs = []
    real = w4a16_v5.config
    monkeypatch.setattr(w4a16_v5, "config", lambda *a: cfgs.append(real(*a)) or cfgs[-1])
    K, N, group = 960, 104, 64
    for _ in range(2):
        x, qw, s, qz, b, want = _inputs(1, K, N, group, dt, dev, gen, True)
        got = w4a16_v5.gemv(x, qw, qz, s, group, b, N)
        assert _rel(got, want) < TOL[dt], f"rel err {_rel(got, want):.2e}"
        assert int(w4a16._counters(x.device, 1).abs().sum()) == 0, "tile counters not re-armed"
    assert cfgs[0][4] > 1, cfgs[0]


def test_v5_selected_by_env(half_target, ops, gen, monkeypatch):
    from halinfer.kernels.triton import w4a16_v3, w4a16_v5

    dev, dt = half_target.device, half_target.dtype
    monkeypatch.setenv("HALINFER_W4A16_GEMV", "v5")
    ran, ran3 = [], []
    real, real3 = w4a16_v5.gemv, w4a16_v3.gemv
    monkeypatch.setattr(w4a16_v5, "gemv", lambda *a: ran.append(a[0].shape[0]) or real(*a))
    monkeypatch.setattr(w4a16_v3, "gemv", lambda *a: ran3.append((a[0], a[1].shape[0])) or real3(*a))
    for M in (1, 5):
        x, qw, s, qz, b, want = _inputs(M, 256, 48, 64, dt, dev, gen, True)
        got = ops.w4a16_linear(x, qw, s, qz, 64, bias=b)
        assert _rel(got, want) < TOL[dt]
    assert ran == [1, 5], "HALINFER_W4A16_GEMV=v5 did not reach the v5 GEMV"
    assert ran3 == [("v3a", 5)], "M > 1 under v5 should run v3a"
