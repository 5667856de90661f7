"""(b) The calibrated methods beat plain rounding where they claim to."""
from __future__ import annotations

import pytest
import torch

from halinfer.quantize.awq import search_scale
from halinfer.quantize.gptq import gptq_quantize, hessian
from halinfer.quantize.grid import quantize_groups
from halinfer.quantize.smoothquant import int8_per_channel, smooth_scale


def _correlated(tokens, k, seed):
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(k, k, generator=g) / k ** 0.5 + torch.eye(k) * 0.3
    return torch.randn(tokens, 12, generator=g) @ torch.randn(12, k, generator=g) + \
        0.3 * torch.randn(tokens, k, generator=g) @ mix


def _out_err(x, w, wq):
    return float(((x @ w.t() - x @ wq.t()) ** 2).mean())


@pytest.mark.parametrize("bits,group,sym", [(4, 32, True), (4, 48, False), (8, 96, True)])
def test_gptq_output_error_below_round_to_nearest(bits, group, sym):
    x = _correlated(600, 96, seed=bits + group)
    w = torch.randn(40, 96, generator=torch.Generator().manual_seed(3))
    _, _, _, dense, _ = gptq_quantize(w, hessian(x), bits, group, sym)
    # round to nearest on the same grid (GPTQ's range convention: includes 0)
    _, _, _, rtn = quantize_groups(w, bits, group, sym=sym, zero_in_range=True)
    e_gptq, e_rtn = _out_err(x, w, dense), _out_err(x, w, rtn)
    assert e_gptq < 0.8 * e_rtn, (e_gptq, e_rtn)


def test_gptq_with_a_dead_input_channel_stays_finite():
    x = _correlated(300, 64, seed=1)
    x[:, 5] = 0
    _, _, _, dense, _ = gptq_quantize(torch.randn(16, 64), hessian(x), 4, 32, True)
    assert torch.isfinite(dense).all() and (dense[:, 5] == 0).all()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_awq_scale_never_worse_than_alpha_zero(seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(300, 96, generator=g) * torch.rand(96, generator=g).pow(3) * 10  # uneven channel magnitudes
    ws = [torch.randn(40, 96, generator=g), torch.randn(24, 96, generator=g)]
    s, losses = search_scale(x, ws, group=32)

    def loss(scale):  # recomputed here: sum of the group's output MSEs with Q(W s) / s
        return sum(_out_err(x, w, quantize_groups(w * scale, 4, 32)[3] / scale) for w in ws)

    assert loss(s) <= loss(torch.ones(96)) * (1 + 1e-6)
    assert losses[0] == pytest.approx(loss(torch.ones(96)), rel=1e-5)  # alpha = 0 is plain rounding
    assert loss(s) < 0.95 * losses[0]  # with uneven channels a scale helps


def test_smoothquant_fold_keeps_the_float_product_and_narrows_the_activation_range():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(200, 64, generator=g)
    x[:, 7] *= 50
    w = torch.randn(32, 64, generator=g)
    s = smooth_scale(x, [w])
    assert torch.allclose((x / s) @ (w * s).t(), x @ w.t(), rtol=1e-4, atol=1e-3)
    ratio = lambda t: float(t.abs().amax(0).max() / t.abs().amax(0).median())  # noqa: E731
    assert ratio(x / s) < ratio(x) / 3
    q, scale, dense = int8_per_channel(w)
    assert q.dtype == torch.int8 and torch.equal(dense, q.float() * scale)


def test_awq_clipping_never_worse_than_none_and_helps_with_outlier_weights():
    from halinfer.quantize.awq import search_clip

    g = torch.Generator().manual_seed(5)
    x = torch.randn(300, 64, generator=g)
    w = torch.randn(24, 64, generator=g)
    w[torch.rand(24, 64, generator=g) < 0.02] *= 8  # a few outlier weights stretch their groups
    bound, totals = search_clip(x, w, group=32)

    def err(wc):
        return float(((x @ w.t() - x @ quantize_groups(wc, 4, 32)[3].t()) ** 2).mean())

    b = bound.repeat_interleave(32, 1)
    clipped = torch.maximum(torch.minimum(w, b), -b)
    assert err(clipped) <= err(w) * (1 + 1e-6)
    assert err(clipped) < err(w)
    assert min(totals) <= totals[0]  # ratio 1 (no clipping) is the first candidate


def _anisotropic(tokens, k, seed):
    """x = z @ A with A's singular values decaying geometrically (strongly correlated inputs)
    plus a few outlier channels ~20x larger than the rest."""
    g = torch.Generator().manual_seed(seed)
    u, _ = torch.linalg.qr(torch.randn(k, k, generator=g, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(k, k, generator=g, dtype=torch.float64))
    a = u @ torch.diag(0.9 ** torch.arange(k, dtype=torch.float64)) @ v.t()
    x = torch.randn(tokens, k, generator=g, dtype=torch.float64) @ a
    x = x / x.std() + 0.05 * torch.randn(tokens, k, generator=g, dtype=torch.float64)
    x[:, [3, 17, 60]] *= 20.0
    return x.float()


@pytest.mark.parametrize("act_order", [False, True])
@pytest.mark.parametrize("sym", [True, False])
def test_gptq_far_below_round_to_nearest_on_anisotropic_inputs(sym, act_order):
    # Fails with a planted bug: e.g. the in-block update without the 1/U[j, j] factor, the
    # block's error not carried to the later columns (W[:, b:] -= E @ U[a:b, b:] dropped),
    # U taken from H instead of H^-1, or act-order's g_idx left as k // group.
    k, group = 192, 32
    x = _anisotropic(2048, k, seed=11)
    w = torch.randn(48, k, generator=torch.Generator().manual_seed(5))
    q, scale, zero, dense, g_idx = gptq_quantize(w, hessian(x), 4, group, sym, act_order=act_order)
    _, _, _, rtn = quantize_groups(w, 4, group, sym=sym, zero_in_range=True)
    e_gptq, e_rtn = _out_err(x, w, dense), _out_err(x, w, rtn)
    assert e_gptq < 0.6 * e_rtn, (e_gptq, e_rtn)
    # the integers, scales, zeros and g_idx rebuild exactly the dense matrix (what a loader does)
    torch.testing.assert_close((q - zero[:, g_idx]).float() * scale[:, g_idx], dense)
    assert torch.bincount(g_idx, minlength=k // group).tolist() == [group] * (k // group)
    if not act_order:
        assert torch.equal(g_idx, torch.arange(k) // group)
