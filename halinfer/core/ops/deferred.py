"""An op's output left for the W4A16 linear it feeds to compute: an RMSNorm with its residual
add (``NormedInput``), or a gated MLP's activation (``GatedInput``).

At batch 1 a decoder layer's two norms are latency, not work: 4,096 values a launch, ~2 us
each plus the gap before the next kernel, 64 of them a step on Llama-3-8B.  Where a norm
feeds nothing but one AWQ linear (models/norm_quant_plan.py decides), the norm hands it a
``NormedInput`` instead of its output, and ``w4a16_linear_normed`` computes
rms_norm(x + residual) * weight inside the GEMV: every program of the GEMV norms the whole
row itself (one row read from L2), and one of them writes the new residual stream.

Likewise a gated MLP's activation act(gate) * up (a 14,336-wide launch at batch 1) can be left
to down_proj's GEMV, which computes it from the gate_up output as it reads its input
(``w4a16_linear_gated``).

Numerics: the contract is the composition "this table's rms_norm (act_and_mul), then its
w4a16_linear"; the new residual stream is exactly x + residual rounded to the dtype, and the
normed input may differ from rms_norm's only by that norm's last-bit rounding (its sum of
squares may be added in another order).  The activation's bits are act_and_mul's.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class NormedInput:
    """Stands in for y = rms_norm(x + residual, weight, eps) [T, H] at a linear.

    ``stream`` receives x + residual (the new residual stream, rms_norm's second output)
    when the linear runs; the decoder layer already holds it as its residual."""
    x: torch.Tensor
    residual: torch.Tensor
    weight: torch.Tensor
    eps: float
    stream: torch.Tensor

    @property
    def shape(self) -> torch.Size:
        return self.x.shape

    @property
    def dtype(self) -> torch.dtype:
        return self.x.dtype

    def materialize(self, ops) -> torch.Tensor:
        """The norm's output through ``ops.rms_norm``; fills ``stream``."""
        y, s = ops.rms_norm(self.x, self.weight, self.eps, self.residual)
        self.stream.copy_(s)
        return y


@dataclass
class GatedInput:
    """Stands in for act_and_mul(h, kind) [T, I] at a linear; h [T, 2I], gate first."""
    h: torch.Tensor
    kind: str

    @property
    def shape(self) -> tuple[int, ...]:
        return (*self.h.shape[:-1], self.h.shape[-1] // 2)

    @property
    def dtype(self) -> torch.dtype:
        return self.h.dtype

    def materialize(self, ops) -> torch.Tensor:
        return ops.act_and_mul(self.h, self.kind)


def deferred(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float):
    """(NormedInput, its stream): what a deferring RMSNorm returns in place of (y, x + residual)."""
    s = torch.empty(x.shape, dtype=torch.promote_types(x.dtype, residual.dtype), device=x.device)
    return NormedInput(x, residual, weight, eps, s), s


def w4a16_linear_normed(ops, xn: NormedInput, qweight, scales, qzeros, group_size, bias=None):
    """``ops.w4a16_linear(rms_norm(xn), ...)``, with ``xn.stream`` filled with x + residual."""
    return ops.w4a16_linear(xn.materialize(ops), qweight, scales, qzeros, group_size, bias)


def w4a16_linear_gated(ops, xg: GatedInput, qweight, scales, qzeros, group_size, bias=None):
    """``ops.w4a16_linear(act_and_mul(xg.h, xg.kind), ...)``."""
    return ops.w4a16_linear(xg.materialize(ops), qweight, scales, qzeros, group_size, bias)
