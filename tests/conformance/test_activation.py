"""Gated activations: silu_and_mul, gelu_and_mul (erf / tanh), swiglu_oai, act_and_mul by name."""
from __future__ import annotations

import math

import torch

from halinfer.core.ops import Ops

from .checks import assert_close, dirty_allocator, ref, untouched
from .params import case, conformance

REF = Ops()

SHAPES = [(1, 64), (7, 67), (1000, 67), (5, 3, 96), (16, 2816)]   # (..., I): input is (..., 2I)
ACT_CASES = [case("x".join(map(str, s)), shape=s) for s in SHAPES]


def _input(case, dtype, device, gen, spread=2.0):
    *lead, i = case.shape
    return (torch.randn(*lead, 2 * i, generator=gen) * spread).to(device, dtype)


def _run(prov, dtype, case, gen, call, spread=2.0):
    x = _input(case, dtype, prov.device, gen, spread)
    dirty_allocator(prov.device, x.numel() * x.element_size() // 2)
    with untouched(x=x):
        out = call(prov.ops, x)
    assert out.dtype == dtype
    assert_close(out, call(REF, ref(x)), dtype, factor=2)


@conformance("silu_and_mul", ACT_CASES)
def test_silu_and_mul(prov, dtype, case, gen):
    _run(prov, dtype, case, gen, lambda ops, x: ops.silu_and_mul(x))


GELU_CASES = [case(f"{c.id}_{a}", shape=c.shape, approximate=a) for c in ACT_CASES for a in ("none", "tanh")]


@conformance("gelu_and_mul", GELU_CASES)
def test_gelu_and_mul(prov, dtype, case, gen):
    _run(prov, dtype, case, gen, lambda ops, x: ops.gelu_and_mul(x, case.approximate))


# Spread 6 puts many inputs past the clamp limit (7), so both clamps are exercised.
SWIGLU_CASES = [case(f"{c.id}_a{a}_l{l}", shape=c.shape, alpha=a, limit=l) for c in ACT_CASES
                for a, l in ((1.702, 7.0), (1.0, 3.0))]


@conformance("swiglu_oai", SWIGLU_CASES)
def test_swiglu_oai(prov, dtype, case, gen):
    _run(prov, dtype, case, gen, lambda ops, x: ops.swiglu_oai(x, case.alpha, case.limit), spread=6.0)


# The by-name dispatchers are ops too (a backend may override them, e.g. to fuse): the
# provider's act_and_mul must agree with the reference's for every name.
DISPATCH_CASES = [case(f"{c.id}_{k}", shape=c.shape, kind=k) for c in ACT_CASES[:3]
                  for k in ("silu", "gelu", "gelu_tanh", "swiglu_oai")]


@conformance("act_and_mul", DISPATCH_CASES)
def test_act_and_mul(prov, dtype, case, gen):
    _run(prov, dtype, case, gen, lambda ops, x: ops.act_and_mul(x, case.kind))


# ---- independent checks of the reference ---------------------------------------

def _elementwise(f, x):
    return torch.tensor([f(float(v)) for v in x.flatten()], dtype=torch.float64).view(x.shape)


def test_reference_activations_match_scalar_formulas():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(3, 2 * 5, generator=g, dtype=torch.float64) * 5
    gate, up = x[:, :5], x[:, 5:]
    silu = _elementwise(lambda v: v / (1 + math.exp(-v)), gate) * up
    gelu = _elementwise(lambda v: 0.5 * v * (1 + math.erf(v / math.sqrt(2))), gate) * up
    gelu_tanh = _elementwise(
        lambda v: 0.5 * v * (1 + math.tanh(math.sqrt(2 / math.pi) * (v + 0.044715 * v ** 3))), gate) * up

    def oai(v, u, alpha=1.702, limit=7.0):
        v, u = min(v, limit), max(-limit, min(u, limit))
        return (u + 1) * v / (1 + math.exp(-alpha * v))
    swiglu = torch.tensor([[oai(float(a), float(b)) for a, b in zip(ra, rb)] for ra, rb in zip(gate, up)],
                          dtype=torch.float64)
    for got, want in ((REF.silu_and_mul(x), silu), (REF.gelu_and_mul(x), gelu),
                      (REF.gelu_and_mul(x, "tanh"), gelu_tanh), (REF.swiglu_oai(x), swiglu)):
        torch.testing.assert_close(got, want, atol=1e-9, rtol=1e-9)
    for kind, want in (("silu", silu), ("gelu", gelu), ("gelu_tanh", gelu_tanh), ("swiglu_oai", swiglu)):
        torch.testing.assert_close(REF.act_and_mul(x, kind), want, atol=1e-9, rtol=1e-9)
