"""Ops fused with the dynamic activation quantization of the linear they feed.

A W8A8 or dynamic-FP8 linear quantizes its input per token before its GEMM.  When an
op's output feeds nothing but such linears, the quantization can happen in the op's
own pass over the row instead of in a second launch: ``rms_norm_quant`` (a norm
feeding qkv or gate_up) and ``act_and_mul_quant`` (a gated MLP's activation feeding
down_proj) return the quantized activations (``QuantizedActs``) and the
``*_linear_prequant`` ops multiply them.

Numerics: the unfused path rounds the op's output to the model dtype and the linear
quantizes that; each fused op is defined as exactly that composition, so fusing never
changes a bit of q or its scales.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from . import fp8 as _fp8
from . import quant as _quant


@dataclass(frozen=True)
class ActQuant:
    """The dynamic activation quantization a linear applies to its input x [T, K].

    kind "int8": symmetric int8 per token (quant.quant_per_token_int8), ``group`` unused (0).
    kind "fp8": float8_e4m3fn per token in groups of ``group`` inputs
    (fp8.quant_per_token_group_fp8); ``group`` >= K is one group per row (per-channel weights).
    """
    kind: str
    group: int = 0

    def __post_init__(self):
        assert self.kind in ("int8", "fp8"), f"unknown activation quantization {self.kind!r}"
        assert self.kind == "int8" or self.group > 0, "fp8 activation quantization needs a group width"


@dataclass
class QuantizedActs:
    """Activations x [T, K] quantized as ``spec`` says, standing in for x at a linear.

    q: int8 [T, K] (int8) or float8_e4m3fn [T_pad, K] (fp8);
    scale: float32 [T] (int8) or [T_pad, ceil(K / group)] (fp8), scale * q ~ x;
    rows: T, the real rows.  T_pad >= T: a backend may pad the fp8 rows (the extra rows
    are zeros with the smallest scale, 1e-10 / 448) and store the fp8 scales
    column-major (``scale.stride() == (1, T_pad)``, ``scales_col_major``), the layout a
    block-scaled GEMM library wants; q[:T] and scale[:T] are the values either way.
    dtype: the dtype x had (the linear's output dtype).
    """
    q: torch.Tensor
    scale: torch.Tensor
    spec: ActQuant
    rows: int
    dtype: torch.dtype
    scales_col_major: bool = False

    @property
    def shape(self) -> tuple[int, int]:
        """(T, K): the shape of the x these stand for."""
        return (self.rows, self.q.shape[-1])

    def values(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(q [T, K], scale [T] or [T, G]) without padding rows (views)."""
        return self.q[: self.rows], self.scale[: self.rows]


def quantize_acts(ops, x: torch.Tensor, spec: ActQuant) -> QuantizedActs:
    """x [T, K] quantized as a linear with ``spec`` would quantize it (row-major, no padding).
    int8 goes through the table's own ``quant_per_token_int8``."""
    if spec.kind == "int8":
        q, s = ops.quant_per_token_int8(x)
    else:
        q, s = _fp8.quant_per_token_group_fp8(x, min(spec.group, x.shape[-1]))
    return QuantizedActs(q, s, spec, x.shape[0], x.dtype)


def rms_norm_quant(ops, x, weight, eps: float, quant: ActQuant, residual=None):
    """``rms_norm`` followed by the dynamic activation quantization ``quant``.

    x, residual: [T, H] in the model dtype; weight [H].  Returns ``QuantizedActs`` of
    y = rms_norm(x, weight, eps) (y rounded to its dtype first, as the unfused path
    hands it to the linear), or, with ``residual``, ``(QuantizedActs of y(s), s)`` with
    s = x + residual, the new residual stream (rms_norm's convention).  q and the scales
    are exactly those of quantizing ``ops.rms_norm``'s output as ``quant`` says
    (quantize_acts): fusing changes no bit.
    """
    out = ops.rms_norm(x, weight, eps, residual)
    y, s = out if residual is not None else (out, None)
    qa = quantize_acts(ops, y.reshape(-1, y.shape[-1]), quant)
    return qa if residual is None else (qa, s)


def act_and_mul_quant(ops, x, kind: str, quant: ActQuant) -> QuantizedActs:
    """``act_and_mul`` followed by the dynamic activation quantization ``quant``.

    x: [..., 2I] in the model dtype, gate first; kind: an ``act_and_mul`` name ("silu",
    "gelu", "gelu_tanh", "swiglu_oai").  Returns ``QuantizedActs`` of
    y = act_and_mul(x, kind) as [T, I] (leading dims flattened), y rounded to x's dtype
    first, as the unfused path hands it to the linear.  q and the scales are exactly
    those of quantizing ``ops.act_and_mul``'s output as ``quant`` says (quantize_acts):
    fusing changes no bit.
    """
    y = ops.act_and_mul(x, kind)
    return quantize_acts(ops, y.reshape(-1, y.shape[-1]), quant)


def w8a8_linear_prequant(xq: QuantizedActs, weight, weight_scale, bias=None):
    """w8a8_linear with its activations already quantized (``ActQuant("int8")``):
    y = (q @ W^T) * scale[:, None] * weight_scale[None, :] + bias, [T, N] in xq.dtype."""
    assert xq.spec.kind == "int8", f"w8a8_linear_prequant takes int8 activations, not {xq.spec}"
    q, s = xq.values()
    return _quant.w8a8_product(q, s, weight, weight_scale, bias, xq.dtype)


def fp8_linear_prequant(xq: QuantizedActs, weight, weight_scale, block_k: int, bias=None):
    """fp8_linear (dynamic activation scales) with its activations already quantized:
    xq.spec must be ``ActQuant("fp8", block_k)`` (group >= K: one per row).  Returns
    [T, N] in xq.dtype, the same numbers fp8_linear gives for the x they came from."""
    K = xq.q.shape[-1]
    assert xq.spec.kind == "fp8" and min(xq.spec.group, K) == min(block_k, K), \
        f"fp8_linear_prequant(block_k={block_k}) got activations quantized as {xq.spec}"
    q, s = xq.values()
    return _fp8.fp8_product(q, s, weight, weight_scale, block_k, bias, xq.dtype)
