"""rms_norm (fused residual), gated activations and rotary vs the core reference."""
from __future__ import annotations

import pytest
import torch

from halinfer.core.ops import Ops
from tritonops_util import assert_close, dirty, randn, ref

REF = Ops()


@pytest.mark.parametrize("T,H", [(1, 64), (7, 67), (33, 1000), (3, 4096)])
@pytest.mark.parametrize("residual", [False, True], ids=["plain", "residual"])
def test_rms_norm_matches_reference(target, ops, gen, T, H, residual):
    dev, dt = target.device, target.dtype
    x = randn(gen, T, H, dtype=dt, device=dev, scale=3.0)
    w = randn(gen, H, dtype=dt, device=dev)
    r = randn(gen, T, H, dtype=dt, device=dev) if residual else None
    x0 = x.clone()
    dirty(dev, 2 * T * H * 4)
    got = ops.rms_norm(x, w, 1e-6, r)
    want = REF.rms_norm(x.cpu(), w.cpu(), 1e-6, None if r is None else r.cpu())
    assert torch.equal(x, x0), "rms_norm wrote into its input"
    if residual:
        # The residual sum is a plain add in the model dtype: exact.
        assert got[1].dtype == dt and torch.equal(got[1].cpu(), want[1])
        got, want = got[0], want[0]
    assert got.dtype == dt
    assert_close(got, ref(want), dt, factor=2, what="rms_norm")


def test_rms_norm_float32_weight_promotes_like_torch(target, ops, gen):
    dev, dt = target.device, target.dtype
    x = randn(gen, 5, 80, dtype=dt, device=dev)
    w = randn(gen, 80, dtype=torch.float32, device=dev)
    got, want = ops.rms_norm(x, w, 1e-5), REF.rms_norm(x.cpu(), w.cpu(), 1e-5)
    assert got.dtype == want.dtype
    assert_close(got, want, dt, what="rms_norm fp32 weight")


def test_rms_norm_reads_strided_rows(target, ops, gen):
    dev, dt = target.device, target.dtype
    big = randn(gen, 6, 2 * 96, dtype=dt, device=dev)
    x = big[:, :96]                                 # rows with stride 192
    w = randn(gen, 96, dtype=dt, device=dev)
    assert_close(ops.rms_norm(x, w, 1e-6), ref(REF.rms_norm(x.cpu(), w.cpu(), 1e-6)), dt, factor=2)


@pytest.mark.parametrize("shape", [(1, 2), (7, 90), (2, 3, 2 * 45), (5, 2 * 1500)], ids=str)
@pytest.mark.parametrize("kind", ["silu", "gelu", "gelu_tanh"])
def test_gated_activation_matches_reference(target, ops, gen, shape, kind):
    dev, dt = target.device, target.dtype
    x = randn(gen, *shape, dtype=dt, device=dev, scale=3.0)
    dirty(dev, x.numel() * 4)
    got = ops.act_and_mul(x, kind)
    want = REF.act_and_mul(x.cpu(), kind)
    assert got.dtype == dt and got.shape == want.shape
    assert_close(got, ref(want), dt, what=kind)


@pytest.mark.parametrize("T,Hq,Hk,D,rot", [(1, 4, 4, 64, 64), (7, 8, 2, 128, 128), (5, 3, 1, 80, 32),
                                           (9, 6, 2, 96, 96), (4, 2, 1, 256, 64)],
                         ids=["d64", "gqa4_d128", "partial32_of_80", "d96", "partial64_of_256"])
@pytest.mark.parametrize("neox", [True, False], ids=["neox", "interleaved"])
def test_rotary_matches_reference(target, ops, gen, T, Hq, Hk, D, rot, neox):
    dev, dt = target.device, target.dtype
    q = randn(gen, T, Hq, D, dtype=dt, device=dev)
    k = randn(gen, T, Hk, D, dtype=dt, device=dev)
    cache = torch.randn(200, rot, generator=gen).to(dev)
    pos = torch.randint(0, 200, (T,), generator=gen).to(dev)
    q0, k0 = q.clone(), k.clone()
    dirty(dev, (q.numel() + k.numel()) * 4)
    gq, gk = ops.rotary(q, k, pos, cache, is_neox=neox)
    wq, wk = REF.rotary(q.cpu(), k.cpu(), pos.cpu(), cache.cpu(), is_neox=neox)
    assert torch.equal(q, q0) and torch.equal(k, k0), "rotary must return new tensors"
    assert gq.dtype == dt and gk.dtype == dt
    assert_close(gq, ref(wq), dt, factor=2, what="q")
    assert_close(gk, ref(wk), dt, factor=2, what="k")
    if rot < D:  # pass-through channels are copies
        assert torch.equal(gq[..., rot:].cpu(), q[..., rot:].cpu())


def test_rotary_reads_q_and_k_views_of_a_fused_qkv(target, ops, gen):
    dev, dt = target.device, target.dtype
    T, Hq, Hk, D = 6, 4, 2, 64
    qkv = randn(gen, T, (Hq + 2 * Hk) * D, dtype=dt, device=dev)
    q = qkv[:, : Hq * D].view(T, Hq, D)
    k = qkv[:, Hq * D: (Hq + Hk) * D].view(T, Hk, D)
    cache = torch.randn(50, D, generator=gen).to(dev)
    pos = torch.randint(0, 50, (T,), generator=gen).to(dev)
    gq, gk = ops.rotary(q, k, pos, cache)
    wq, wk = REF.rotary(q.cpu(), k.cpu(), pos.cpu(), cache.cpu())
    assert_close(gq, ref(wq), dt, factor=2, what="q")
    assert_close(gk, ref(wk), dt, factor=2, what="k")
