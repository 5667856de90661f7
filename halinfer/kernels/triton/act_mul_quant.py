"""The gated activation and the next linear's dynamic activation quantization in one launch:
core/ops/norm_quant.py's ``act_and_mul_quant`` (a GatedMLP feeding a W8A8 or dynamic-FP8
down_proj).

The unfused path is activation.py's kernel writing act(gate) * up in the model dtype, then
act_quant.py reading it back to quantize it.  Here the product is computed by activation.py's
own jit helper (``act_mul``), rounded to the model dtype as that kernel stores it, and
quantized by act_quant.py's helpers (``int8_scale`` / ``int8_codes``, ``fp8_scale`` /
``fp8_codes``).  The only reductions are maxima, which are exact in any order, so q and the
scales are the bits act_and_mul + quant_int8_rows / quant_fp8_groups give, compiled or not.

Two kernels, as act_quant.py has:
  * FP8 in groups narrower than the row (128 in the published checkpoints; any width): a
    program per row and chunk of groups, one pass, since a group needs nothing outside it.
  * int8 per token, and FP8 with one group per row: the scale needs the whole row's maximum.
    A program per row makes two passes over it in chunks (maximum, then codes), recomputing
    the product in the second.  Holding the row in registers instead would need a tile of
    next_pow2(I) float32 values (16384 at Llama-3-8B's I = 14336: 64 KiB of registers for one
    program, spilling or starving occupancy); the second pass re-reads a row the first just
    brought into L2 (57 KiB at I = 14336 in bf16) and recomputes a few flops per element.

FP8 rows can be padded to a multiple of ``pad_rows_to`` (zeros, scale 1e-10 / 448) and the
scales written column-major, the layout cuBLASLt's block-scaled GEMM wants (scaled_gemm.py).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from halinfer.core.ops.norm_quant import ActQuant, QuantizedActs

from .act_quant import fp8_codes, fp8_scale, int8_codes, int8_scale
from .activation import KINDS, act_mul, gated_rows
from .common import cdiv, next_pow2, on_interpreter


@triton.jit
def _product(x_ptr, row, k, mask, stride_x, I, KIND: tl.constexpr):
    """act(gate) * up at columns k of a row, rounded to the model dtype as activation.py's kernel
    stores it, as float32 (0 outside ``mask``)."""
    g = tl.load(x_ptr + row * stride_x + k, mask=mask, other=0.0)
    u = tl.load(x_ptr + row * stride_x + I + k, mask=mask, other=0.0)
    return act_mul(g, u, KIND).to(g.dtype).to(tl.float32)


@triton.jit
def _act_mul_quant_groups_kernel(x_ptr, q_ptr, s_ptr, T, I, G, group, stride_x, stride_q, stride_st, stride_sg,
                                 KIND: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_G: tl.constexpr):
    t = tl.program_id(0).to(tl.int64)
    g = tl.program_id(1) * BLOCK_G + tl.arange(0, BLOCK_G)
    c = tl.arange(0, BLOCK_C)
    k = g[:, None] * group + c[None, :]
    mask = (g < G)[:, None] & (c < group)[None, :] & (k < I)
    # rows T.. are padding: nothing loaded (no column is below 0), so zeros at the smallest scale
    # (a scalar condition is folded into the column limit: the interpreter refuses bool & bool[])
    live = tl.where(t < T, I, 0)
    y = _product(x_ptr, tl.minimum(t, T - 1), k, mask & (k < live), stride_x, I, KIND)
    s = fp8_scale(tl.max(tl.abs(y), axis=1))
    # stored as bytes: the caller passes a uint8 view (act_quant.py does the same)
    q = fp8_codes(y, s[:, None])
    tl.store(q_ptr + t * stride_q + k, q, mask=mask)
    tl.store(s_ptr + t * stride_st + g * stride_sg, s, mask=g < G)


@triton.jit
def _act_mul_quant_rows_kernel(x_ptr, q_ptr, s_ptr, T, I, stride_x, stride_q, stride_s,
                               KIND: tl.constexpr, FP8: tl.constexpr, BLOCK: tl.constexpr):
    t = tl.program_id(0).to(tl.int64)
    src = tl.minimum(t, T - 1)
    # rows T.. are fp8 padding: nothing loaded (no column is below 0), zeros at the smallest scale
    live = tl.where(t < T, I, 0)
    amax = tl.zeros((BLOCK,), dtype=tl.float32)
    for k0 in range(0, I, BLOCK):
        k = k0 + tl.arange(0, BLOCK)
        amax = tl.maximum(amax, tl.abs(_product(x_ptr, src, k, k < live, stride_x, I, KIND)))
    m = tl.max(amax, axis=0)
    if FP8:
        s = fp8_scale(m)
    else:
        s = int8_scale(m)
    for k0 in range(0, I, BLOCK):
        k = k0 + tl.arange(0, BLOCK)
        y = _product(x_ptr, src, k, k < live, stride_x, I, KIND)
        if FP8:
            q = fp8_codes(y, s)
        else:
            q = int8_codes(y, s)
        tl.store(q_ptr + t * stride_q + k, q, mask=k < I)
    tl.store(s_ptr + t * stride_s, s)


def fusable(kind: str) -> bool:
    """Whether the kernels compute the gated activation ``kind`` (activation.py's kinds)."""
    return kind in KINDS


def act_and_mul_quant(x: torch.Tensor, kind: str, spec: ActQuant, pad_rows_to: int = 1,
                      scales_col_major: bool = False, block: int | None = None):
    """core.ops.norm_quant.act_and_mul_quant's contract for x [..., 2I] (gate first), in one
    launch; None for an activation ``fusable`` says no to.  fp8 only: rows padded to a
    multiple of ``pad_rows_to`` and scales column-major on request (QuantizedActs documents
    the layout).  block: the row kernel's chunk (tests pick small ones to run several)."""
    if not fusable(kind):
        return None
    x2, I = gated_rows(x)
    T = x2.shape[0]
    interp = on_interpreter(x)
    dev = x.device
    fp8 = spec.kind == "fp8"
    if fp8:
        group = min(spec.group, I) if I else 1
        G = cdiv(I, group)
        Tp = cdiv(max(T, 1), pad_rows_to) * pad_rows_to
        q = torch.empty((Tp, I), dtype=torch.float8_e4m3fn, device=dev)
        qs = torch.empty((G, Tp), dtype=torch.float32, device=dev).t() if scales_col_major else \
            torch.empty((Tp, G), dtype=torch.float32, device=dev)
    else:
        assert pad_rows_to == 1 and not scales_col_major, "int8 activations are never padded"
        group, G, Tp = I, 1, T
        q = torch.empty((T, I), dtype=torch.int8, device=dev)
        qs = torch.empty((T,), dtype=torch.float32, device=dev)
    qa = QuantizedActs(q, qs, spec, T, x.dtype, scales_col_major=fp8 and scales_col_major)
    if not (Tp and I):
        return qa
    qv = q.view(torch.uint8) if fp8 else q
    if fp8 and group < I:
        block_c = next_pow2(group)
        block_g = max(1, min(next_pow2(G), (4096 if interp else 1024) // block_c))
        _act_mul_quant_groups_kernel[(Tp, cdiv(G, block_g))](
            x2, qv, qs, T, I, G, group, x2.stride(0), q.stride(0), qs.stride(0), qs.stride(1),
            KIND=KINDS[kind], BLOCK_C=block_c, BLOCK_G=block_g, num_warps=1 if interp else 4)
    else:
        block = block or min(next_pow2(I), 512 if interp else 2048)
        _act_mul_quant_rows_kernel[(Tp,)](
            x2, qv, qs, T, I, x2.stride(0), q.stride(0), qs.stride(0),
            KIND=KINDS[kind], FP8=fp8, BLOCK=block, num_warps=1 if interp else 4)
    return qa
