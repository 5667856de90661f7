"""rms_norm and layer_norm (with and without the fused residual add) vs the reference."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from halinfer.core.ops import Ops

from .checks import assert_close, dirty_allocator, ref, untouched
from .params import case, conformance

REF = Ops()

SHAPES = [(1, 64), (7, 67), (1000, 67), (33, 4096)]
NORM_CASES = [
    case(f"T{t}_H{h}{'_res' if res else ''}", T=t, H=h, residual=res, features=("residual",) if res else ())
    for t, h in SHAPES for res in (False, True)
]


def _inputs(case, dtype, device, gen):
    x = torch.randn(case.T, case.H, generator=gen) * 3 + 0.5
    w = 1 + 0.1 * torch.randn(case.H, generator=gen)
    r = torch.randn(case.T, case.H, generator=gen) if case.residual else None
    return [None if t is None else t.to(device=device, dtype=dtype) for t in (x, w, r)]


def _check_pair(out, expect, dtype, residual, what):
    if residual:
        assert isinstance(out, tuple) and len(out) == 2, f"{what} with residual returns (y, x + residual)"
        assert_close(out[0], expect[0], dtype, factor=2, what=f"{what} y")
        assert_close(out[1], expect[1], dtype, what=f"{what} new residual")
    else:
        assert_close(out, expect, dtype, factor=2, what=what)


@conformance("rms_norm", NORM_CASES)
def test_rms_norm(prov, dtype, case, gen):
    x, w, r = _inputs(case, dtype, prov.device, gen)
    dirty_allocator(prov.device, x.numel() * x.element_size())
    with untouched(x=x, weight=w, residual=r):
        out = prov.ops.rms_norm(x, w, 1e-6, residual=r)
    expect = REF.rms_norm(ref(x), ref(w), 1e-6, residual=ref(r))
    _check_pair(out, expect, dtype, case.residual, "rms_norm")
    y = out[0] if case.residual else out
    assert y.dtype == dtype and y.device.type == prov.device.type


LN_CASES = [
    case(f"T{t}_H{h}{'_res' if res else ''}{'' if affine else '_noaffine'}", T=t, H=h, residual=res,
         affine=affine, features=("residual",) if res else ())
    for t, h in SHAPES for res in (False, True) for affine in ((True, False) if t == 7 else (True,))
]


@conformance("layer_norm", LN_CASES)
def test_layer_norm(prov, dtype, case, gen):
    x, w, r = _inputs(case, dtype, prov.device, gen)
    b = (0.1 * torch.randn(case.H, generator=gen)).to(prov.device, dtype)
    if not case.affine:
        w = b = None
    with untouched(x=x, residual=r):
        out = prov.ops.layer_norm(x, w, b, 1e-5, residual=r)
    expect = REF.layer_norm(ref(x), ref(w), ref(b), 1e-5, residual=ref(r))
    _check_pair(out, expect, dtype, case.residual, "layer_norm")


# ---- independent checks of the reference ---------------------------------------

def test_reference_rms_norm_matches_the_formula():
    g = torch.Generator().manual_seed(1)
    x, w = torch.randn(5, 67, generator=g, dtype=torch.float64), torch.randn(67, generator=g, dtype=torch.float64)
    expect = w * x / torch.sqrt((x * x).sum(-1, keepdim=True) / 67 + 1e-6)
    torch.testing.assert_close(REF.rms_norm(x.float(), w.float(), 1e-6), expect.float(), atol=1e-5, rtol=1e-5)
    y, s = REF.rms_norm(x.float(), w.float(), 1e-6, residual=2 * x.float())
    torch.testing.assert_close(s, 3 * x.float())
    torch.testing.assert_close(y, REF.rms_norm(3 * x.float(), w.float(), 1e-6))


def test_reference_layer_norm_matches_the_formula():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(4, 67, generator=g, dtype=torch.float64)
    w, b = torch.randn(67, generator=g, dtype=torch.float64), torch.randn(67, generator=g, dtype=torch.float64)
    mu, var = x.mean(-1, keepdim=True), x.var(-1, unbiased=False, keepdim=True)
    expect = (x - mu) / torch.sqrt(var + 1e-5) * w + b
    torch.testing.assert_close(REF.layer_norm(x.float(), w.float(), b.float(), 1e-5), expect.float(),
                               atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(REF.layer_norm(x.float(), None, None, 1e-5),
                               F.layer_norm(x, (67,)).float(), atol=1e-5, rtol=1e-5)
