"""act_and_mul_quant (a gated activation + down_proj's dynamic activation quantization) vs
the reference.

Its contract is the composition "this table's act_and_mul, then the linear's quantization",
so besides the float checks against the reference each provider's q and scales must be the
quantization of its own act_and_mul output: exactly on the CPU, and on a GPU within the
tolerance test_norm_quant.py allows a compiled fused kernel (``checks.same_quant_bits``), so a fused MLP
gives the numbers of an unfused one.  The gelu / silu kernels' only reductions are maxima, so
a GPU should in fact give the same bits; the tolerance is the shared rule, not an excuse."""
from __future__ import annotations

import pytest
import torch

from halinfer.core.ops import ActQuant, Ops, QuantizedActs
from halinfer.core.ops.fp8 import FP8_MAX, FP8_MIN_SCALE, quant_per_token_group_fp8
from halinfer.core.ops.norm_quant import quantize_acts

from .checks import TOL, assert_close, quant_bytes, same_quant_bits, dirty_allocator, ref, untouched
from .params import case, conformance

REF = Ops()

# (leading dims, I, activation, quantization, fp8 group (0: whole row)); the input is [*lead, 2I]
AMQ_SHAPES = [
    ((1,), 67, "silu", "int8", 0), ((7,), 300, "gelu", "int8", 0), ((70,), 1000, "gelu_tanh", "int8", 0),
    ((7,), 14336, "silu", "int8", 0),                    # Llama-3-8B's intermediate size: many row chunks
    ((5, 3), 96, "silu", "int8", 0),                     # leading dims are flattened into T
    ((1,), 256, "silu", "fp8", 128), ((7,), 300, "gelu_tanh", "fp8", 128), ((70,), 1000, "silu", "fp8", 128),
    ((3,), 14336, "gelu", "fp8", 128),
    ((17,), 130, "gelu", "fp8", 64), ((70,), 67, "silu", "fp8", 64),
    ((3,), 67, "silu", "fp8", 0), ((7,), 1000, "gelu_tanh", "fp8", 0), ((1,), 14336, "silu", "fp8", 0),
    ((5,), 200, "silu", "fp8", 96), ((70,), 300, "gelu", "fp8", 96),   # groups that are no power of two
    # no Triton swiglu_oai: the cuda table's declared fallback
    ((7,), 67, "swiglu_oai", "int8", 0), ((7,), 300, "swiglu_oai", "fp8", 128),
]
AMQ_CASES = [case(f"{'x'.join(map(str, lead))}_I{i}_{act}_{k}{'_g' + str(g) if g else ''}", lead=lead, I=i, act=act,
                  kind=k, group=g, features=(k, act))
             for lead, i, act, k, g in AMQ_SHAPES]


def _spec(case):
    return ActQuant("int8") if case.kind == "int8" else ActQuant("fp8", case.group or case.I)


@conformance("act_and_mul_quant", AMQ_CASES)
def test_act_and_mul_quant(prov, dtype, case, gen):
    dev, spec, I = prov.device, _spec(case), case.I
    T = 1
    for d in case.lead:
        T *= d
    x = (torch.randn(*case.lead, 2 * I, generator=gen) * 3).to(dev, dtype)
    x.view(-1, 2 * I)[T // 2, : I // 3] *= 20   # one row with a few large products: other groups' scales stay small
    dirty_allocator(dev, T * I * 4)
    with untouched(x=x):
        qa = prov.ops.act_and_mul_quant(x, case.act, spec)
    assert isinstance(qa, QuantizedActs) and qa.spec == spec and qa.rows == T and qa.dtype == dtype
    q, sc = qa.values()
    G = -(-I // min(spec.group, I)) if spec.kind == "fp8" else None
    assert q.shape == (T, I) and q.dtype == (torch.int8 if spec.kind == "int8" else torch.float8_e4m3fn)
    assert sc.dtype == torch.float32 and sc.shape == ((T,) if spec.kind == "int8" else (T, G))
    if qa.q.shape[0] > T:   # padding rows, as the contract allows for fp8
        assert spec.kind == "fp8" and not quant_bytes(qa.q[T:]).any()
        assert bool((qa.scale[T:].cpu() == torch.tensor(FP8_MIN_SCALE) / FP8_MAX).all())
    if qa.scales_col_major:
        assert qa.scale.stride() == (1, qa.q.shape[0])

    # 1. the same bits as this provider's unfused path: its act_and_mul, then the linear's quantization
    y = prov.ops.act_and_mul(x, case.act).reshape(T, I)
    if spec.kind == "int8":
        uq, us = prov.ops.quant_per_token_int8(y)
    else:
        uq, us = quant_per_token_group_fp8(y.cpu(), min(spec.group, I))
    same_quant_bits(prov, dtype, q, sc, uq.contiguous(), us, "act_and_mul")

    # 2. against the float32 reference: the scales follow the reference product's maxima, and
    # q * scale is the reference product within half a quantization step (+ the dtype's rounding)
    ey = REF.act_and_mul(ref(x), case.act).reshape(T, I)
    eq = quantize_acts(REF, ey, spec)
    atol, rtol = TOL[dtype]
    assert_close(sc, eq.scale, dtype, factor=2, what="scales")
    if spec.kind == "int8":
        step = sc.cpu()[:, None]
        quant_err = 0.5 * step
    else:   # e4m3: half a step is 2**-4 of the value (3 mantissa bits), 2**-10 of the scale's unit below 2**-6
        step = sc.cpu().repeat_interleave(min(spec.group, I), 1)[:, :I]
        quant_err = ey.abs() * 2 ** -4 + step * 2 ** -10
    err = (q.cpu().float() * step - ey).abs()
    bound = quant_err * 1.01 + 2 * (atol + rtol * ey.abs())
    assert bool((err <= bound).all()), f"dequantized output off the reference product by up to {float(err.max()):.3g}"


def test_reference_is_the_unfused_composition():
    """The reference is act_and_mul rounded to the model dtype, then quantize_acts: the bits a
    GatedMLP's down_proj computes from the float activation today."""
    g = torch.Generator().manual_seed(3)
    x = (torch.randn(9, 2 * 200, generator=g) * 3).to(torch.bfloat16)
    for kind in ("silu", "gelu", "gelu_tanh", "swiglu_oai"):
        for spec in (ActQuant("int8"), ActQuant("fp8", 128), ActQuant("fp8", 200)):
            qa = REF.act_and_mul_quant(x, kind, spec)
            want = quantize_acts(REF, REF.act_and_mul(x, kind), spec)
            assert torch.equal(quant_bytes(qa.q), quant_bytes(want.q)) and torch.equal(qa.scale, want.scale)
            assert qa.rows == 9 and qa.dtype == torch.bfloat16 and not qa.scales_col_major


# ---- the checks can fail: planted bugs (as test_suite_catches_bugs.py plants them) -----------

def _float_product(self, x, kind, quant):
    """act(gate) * up kept in float32 until quantized (vLLM's silu_and_mul does so): no rounding
    to the model dtype, so not the bits the unfused path hands down_proj."""
    I = x.shape[-1] // 2
    g, u = x[..., :I].float(), x[..., I:].float()
    y = torch.nn.functional.silu(g) * u if kind == "silu" else torch.nn.functional.gelu(g) * u
    qa = quantize_acts(self, y.reshape(-1, I), quant)
    qa.dtype = x.dtype
    return qa


def _one_fp8_group_per_row(self, x, kind, quant):
    qa = Ops.act_and_mul_quant(self, x, kind, type(quant)("fp8", x.shape[-1]))
    qa.spec = quant
    return qa


def _up_and_gate_swapped(self, x, kind, quant):
    I = x.shape[-1] // 2
    return Ops.act_and_mul_quant(self, torch.cat((x[..., I:], x[..., :I]), -1), kind, quant)


@pytest.mark.parametrize("bug,case_id,dtype", [
    (_float_product, "7_I300_gelu_int8", torch.float16),
    (_float_product, "70_I1000_silu_fp8_g128", torch.bfloat16),
    (_one_fp8_group_per_row, "7_I300_gelu_tanh_fp8_g128", torch.float16),
    (_up_and_gate_swapped, "1_I67_silu_int8", torch.float32),
], ids=lambda v: getattr(v, "__name__", None))
def test_the_checks_catch_a_planted_bug(bug, case_id, dtype):
    from .providers import Provider

    c = next(c for c in AMQ_CASES if c.id == case_id)

    def prov(ops):
        return Provider("planted", ops=ops, weight_quant=("w8a8", "fp8"))
    test_act_and_mul_quant(prov(Ops()), dtype, c, torch.Generator().manual_seed(0))   # control
    broken = type("Planted", (Ops,), {"act_and_mul_quant": bug})()
    with pytest.raises(AssertionError):
        test_act_and_mul_quant(prov(broken), dtype, c, torch.Generator().manual_seed(0))
