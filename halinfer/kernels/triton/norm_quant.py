"""RMSNorm (+ residual add) and the next linear's dynamic activation quantization in one
launch: core/ops/norm_quant.py's ``rms_norm_quant``.

The unfused path is the rms_norm kernel (norm.py) writing y in the model dtype, then
act_quant.py reading y back to quantize it.  Here the row stays in registers: the norm
is norm.py's own code (``_rms_rows``, launched with norm.py's ``launch_shape`` so its
reductions run in the same order), y is rounded to the model dtype as the unfused path
stores it, and the quantization is act_quant.py's own jit helpers (``int8_scale`` /
``int8_codes``, ``fp8_scale`` / ``fp8_codes``: IEEE ``div_rn``, the 1.5 * 2**23 rounding for
int8, ``e4m3_bytes`` for fp8).  So q and the scales are the bits rms_norm +
quant_int8_rows / quant_fp8_groups give.

FP8 groups must be a power of two (128 in the published checkpoints; reshaping the
row's register tile into [groups, width] needs it) or cover the whole row; the
launcher returns None for anything else and the caller takes the composition.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from halinfer.core.ops.norm_quant import ActQuant, QuantizedActs

from .act_quant import fp8_codes, fp8_scale, int8_codes, int8_scale
from .common import cdiv, on_interpreter
from .norm import _rms_rows, _rows, launch_shape

_TL_DTYPE = {torch.float16: tl.float16, torch.bfloat16: tl.bfloat16, torch.float32: tl.float32}


@triton.jit
def _rms_norm_quant_kernel(x_ptr, r_ptr, w_ptr, s_ptr, q_ptr, qs_ptr, T, T_pad, G,
                           stride_x, stride_r, stride_s, stride_q, stride_qst, stride_qsg, H, eps,
                           HAS_RES: tl.constexpr, OUT_DTYPE: tl.constexpr, FP8: tl.constexpr,
                           GROUP: tl.constexpr, ROWS: tl.constexpr, BLOCK: tl.constexpr):
    rows = (tl.program_id(0) * ROWS + tl.arange(0, ROWS)).to(tl.int64)[:, None]
    cols = tl.arange(0, BLOCK)[None, :]
    mask = (rows < T) & (cols < H)
    y = _rms_rows(x_ptr, r_ptr, w_ptr, s_ptr, rows, cols, mask, stride_x, stride_r, stride_s, H, eps, HAS_RES)
    # the value the unfused path stores and the linear then reads: y in the model dtype
    y = y.to(OUT_DTYPE).to(tl.float32)
    out = (rows < T_pad) & (cols < H)     # fp8 rows T..T_pad are padding: zeros, smallest scale
    if not FP8:
        s = int8_scale(tl.max(tl.abs(y), axis=1))
        # codes before the store's address, the order the registers were allocated for
        q = int8_codes(y, s[:, None])
        tl.store(q_ptr + rows * stride_q + cols, q, mask=out)
        tl.store(qs_ptr + rows * stride_qst, s[:, None], mask=rows < T_pad)
    elif GROUP >= BLOCK:
        # one group per row (per-channel weights)
        s = fp8_scale(tl.max(tl.abs(y), axis=1))
        q = fp8_codes(y, s[:, None])
        tl.store(q_ptr + rows * stride_q + cols, q, mask=out)
        tl.store(qs_ptr + rows * stride_qst, s[:, None], mask=rows < T_pad)
    else:
        # the row's tile as [groups, GROUP]: lanes past H are 0 and leave every group's max alone
        y3 = tl.reshape(y, (ROWS, BLOCK // GROUP, GROUP))
        s = fp8_scale(tl.max(tl.abs(y3), axis=2))
        q = tl.reshape(fp8_codes(y3, s[:, :, None]), (ROWS, BLOCK))
        tl.store(q_ptr + rows * stride_q + cols, q, mask=out)
        g = tl.arange(0, BLOCK // GROUP)[None, :]
        tl.store(qs_ptr + rows * stride_qst + g * stride_qsg, s, mask=(rows < T_pad) & (g < G))


def fusable(spec: ActQuant, H: int) -> bool:
    """Whether the kernel covers ``spec`` for rows of H: int8, or fp8 with a power-of-two
    group or one group per row."""
    return spec.kind == "int8" or spec.group >= H or spec.group & (spec.group - 1) == 0


def rms_norm_quant(x, weight, eps: float, spec: ActQuant, residual=None, pad_rows_to: int = 1,
                   scales_col_major: bool = False):
    """core.ops.norm_quant.rms_norm_quant's contract for x [T, H] (any leading dims), in one
    launch; None when ``fusable`` says no.  fp8 only: rows padded to a multiple of
    ``pad_rows_to`` and scales column-major on request (QuantizedActs documents the layout)."""
    shape, H = x.shape, x.shape[-1]
    if not fusable(spec, H):
        return None
    interp = on_interpreter(x)
    x2 = _rows(x)
    T = x2.shape[0]
    s_dtype = x.dtype if residual is None else torch.promote_types(x.dtype, residual.dtype)
    out_dtype = torch.promote_types(weight.dtype, s_dtype)
    if residual is not None:
        r2 = _rows(residual)
        s = torch.empty((T, H), dtype=s_dtype, device=x.device)
    else:
        r2 = s = x2  # unused
    fp8 = spec.kind == "fp8"
    if fp8:
        group = min(spec.group, H)
        G = cdiv(H, group)
        Tp = cdiv(max(T, 1), pad_rows_to) * pad_rows_to
        q = torch.empty((Tp, H), dtype=torch.float8_e4m3fn, device=x.device)
        qs = torch.empty((G, Tp), dtype=torch.float32, device=x.device).t() if scales_col_major else \
            torch.empty((Tp, G), dtype=torch.float32, device=x.device)
    else:
        assert pad_rows_to == 1 and not scales_col_major, "int8 activations are never padded"
        group, G, Tp = H, 1, T
        q = torch.empty((T, H), dtype=torch.int8, device=x.device)
        qs = torch.empty((T,), dtype=torch.float32, device=x.device)
    rows, block, warps = launch_shape(T, H, interp)
    if T:
        _rms_norm_quant_kernel[(cdiv(Tp, rows),)](
            x2, r2, weight, s, q.view(torch.uint8) if fp8 else q, qs, T, Tp, G,
            x2.stride(0), r2.stride(0), s.stride(0), q.stride(0), qs.stride(0), qs.stride(-1) if fp8 else 0,
            H, float(eps), HAS_RES=residual is not None, OUT_DTYPE=_TL_DTYPE[out_dtype], FP8=fp8,
            GROUP=group if group < H else block, ROWS=rows, BLOCK=block, num_warps=warps)
    qa = QuantizedActs(q, qs, spec, T, out_dtype, scales_col_major=fp8 and scales_col_major)
    return qa if residual is None else (qa, s.view(shape))
