"""The plain (non-gated) GELU op: erf and tanh forms, against the reference and
against the scalar formulas."""
from __future__ import annotations

import math

import torch

from halinfer.core.ops import Ops

from .checks import assert_close, dirty_allocator, ref, untouched
from .params import case, conformance

REF = Ops()

SHAPES = [(1, 64), (7, 67), (1000, 67), (5, 3, 96), (16, 2816)]
GELU_CASES = [case("x".join(map(str, s)) + f"_{a}", shape=s, approximate=a) for s in SHAPES for a in ("none", "tanh")]


@conformance("gelu", GELU_CASES)
def test_gelu(prov, dtype, case, gen):
    x = (torch.randn(*case.shape, generator=gen) * 3.0).to(prov.device, dtype)
    dirty_allocator(prov.device, x.numel() * x.element_size())
    with untouched(x=x):
        out = prov.ops.gelu(x, case.approximate)
    assert out.dtype == dtype
    assert_close(out, REF.gelu(ref(x), case.approximate), dtype, factor=2)


@conformance("act", [case(f"{c.id}_{k}", shape=c.shape, kind=k) for c in GELU_CASES[:6:2]
                     for k in ("gelu", "gelu_tanh")])
def test_act(prov, dtype, case, gen):
    x = (torch.randn(*case.shape, generator=gen) * 3.0).to(prov.device, dtype)
    with untouched(x=x):
        out = prov.ops.act(x, case.kind)
    assert out.dtype == dtype
    assert_close(out, REF.act(ref(x), case.kind), dtype, factor=2)


def test_reference_gelu_matches_scalar_formulas():
    x = torch.randn(4, 9, generator=torch.Generator().manual_seed(5), dtype=torch.float64) * 5

    def each(f):
        return torch.tensor([f(float(v)) for v in x.flatten()], dtype=torch.float64).view(x.shape)

    erf = each(lambda v: 0.5 * v * (1 + math.erf(v / math.sqrt(2))))
    tanh = each(lambda v: 0.5 * v * (1 + math.tanh(math.sqrt(2 / math.pi) * (v + 0.044715 * v ** 3))))
    torch.testing.assert_close(REF.gelu(x), erf, atol=1e-9, rtol=1e-9)
    torch.testing.assert_close(REF.gelu(x, "tanh"), tanh, atol=1e-9, rtol=1e-9)
    torch.testing.assert_close(REF.act(x, "gelu"), erf, atol=1e-9, rtol=1e-9)
    torch.testing.assert_close(REF.act(x, "gelu_tanh"), tanh, atol=1e-9, rtol=1e-9)
    # the two forms differ by more than the tolerance, so swapping them is caught
    assert (erf - tanh).abs().max() > 1e-4
