"""Dynamic activation quantization in one launch: per token in groups for FP8
(core/ops/fp8.py: quant_per_token_group_fp8) and per token for int8
(core/ops/quant.py: quant_per_token_int8), the same arithmetic as the references.

In torch each is five or six elementwise kernels over the activations (upcast, abs,
amax, divide, clamp, cast); here it is one launch (FP8: a program per row and chunk of
groups; int8: a program per row, two passes over it), which every quantized linear pays.

The FP8 scales can be written column-major ([T, G] with stride (1, T_pad)) and the rows
padded to a multiple of 4: the layout cuBLASLt's block-scaled FP8 GEMM wants for its
activation scales (scaled_gemm.py), so no copy follows.

The arithmetic (int8_scale / int8_codes, fp8_scale / fp8_codes) is written once here as jit
helpers; the kernels that quantize inside another op's pass (norm_quant.py, act_mul_quant.py)
call the same helpers, so every path rounds alike.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from halinfer.core.ops.fp8 import FP8_MAX, FP8_MIN_SCALE

from .common import cdiv, next_pow2, on_interpreter

# the kernels spell out core/ops/fp8.py's constants
assert FP8_MAX == 448.0 and FP8_MIN_SCALE == 1e-10, "act_quant's FP8 constants follow core/ops/fp8.py"

@triton.jit
def _round_e4m3(v):
    """v (float32, |v| <= 448) rounded half-to-even to the nearest float8_e4m3fn value, in
    float32 arithmetic: the cast that follows is then exact.  Rounding here rather than in
    the cast makes the result the same compiled and interpreted (triton 3.9's interpreter
    rounds 124.4 to 64.0, not 128.0)."""
    bits = v.to(tl.int32, bitcast=True)
    # normals: keep 3 mantissa bits; the carry of a round-up moves into the exponent
    rounded = (bits + 0x7FFFF + ((bits >> 20) & 1)) & -1048576
    normal = rounded.to(tl.float32, bitcast=True)
    # subnormals (below 2**-6): multiples of 2**-9 (the sign of a zero is set by e4m3_bytes)
    sub = ((v * 512.0 + 12582912.0) - 12582912.0) * 0.001953125
    return tl.where(tl.abs(v) < 0.015625, sub, normal)


@triton.jit
def e4m3_bytes(v):
    """float8_e4m3fn bytes (uint8) of v (float32, |v| <= 448): _round_e4m3, the exact cast, and
    v's sign bit put on every byte, so a tiny negative value gives -0.0 (0x80) as torch's cast
    does.  The float form of that sign (-sub where sub is +0.0) came out +0.0 on the H200; an
    integer OR on the byte cannot."""
    b = _round_e4m3(v).to(tl.float8e4nv).to(tl.uint8, bitcast=True)
    return b | ((v.to(tl.int32, bitcast=True) >> 24) & 0x80).to(tl.uint8)


@triton.jit
def int8_scale(amax):
    """quant_per_token_int8's scale of a row whose largest |x| is amax: max(amax, 1e-8) / 127,
    an IEEE division as torch's (a plain / compiles to an approximate one)."""
    return tl.math.div_rn(tl.maximum(amax, 1e-8), 127.0)


@triton.jit
def int8_codes(x, s):
    """int8 codes of x (float32) at scale s: round(x / s) half-to-even, clamped to [-128, 127]."""
    v = tl.math.div_rn(x, s)
    # (v + 1.5 * 2**23) - 1.5 * 2**23 rounds |v| < 2**22 half-to-even, as torch.round does
    r = (v + 12582912.0) - 12582912.0
    return tl.minimum(tl.maximum(r, -128.0), 127.0).to(tl.int8)


@triton.jit
def fp8_scale(amax):
    """quant_per_token_group_fp8's scale of a group whose largest |x| is amax: max(amax, 1e-10) / 448."""
    return tl.math.div_rn(tl.maximum(amax, 1e-10), 448.0)


@triton.jit
def fp8_codes(x, s):
    """float8_e4m3fn bytes (uint8) of x (float32) at scale s: x / s clamped to +-448, rounded."""
    return e4m3_bytes(tl.clamp(tl.math.div_rn(x, s), -448.0, 448.0))


@triton.jit
def _fp8_group_quant_kernel(x_ptr, q_ptr, s_ptr, T, K, G, group, stride_xt, stride_qt, stride_st, stride_sg,
                            BLOCK_C: tl.constexpr, BLOCK_G: tl.constexpr):
    # grid (rows, chunks of BLOCK_G groups): one row is many programs, so a step's few
    # thousand tokens fill the GPU
    t = tl.program_id(0).to(tl.int64)
    g = tl.program_id(1) * BLOCK_G + tl.arange(0, BLOCK_G)
    c = tl.arange(0, BLOCK_C)
    k = g[:, None] * group + c[None, :]
    mask = (g < G)[:, None] & (c < group)[None, :] & (k < K)
    x = tl.load(x_ptr + tl.minimum(t, T - 1) * stride_xt + k, mask=mask, other=0.0).to(tl.float32)
    x = tl.where(t < T, x, 0.0)     # rows T.. are padding: zeros, at the smallest scale
    s = fp8_scale(tl.max(tl.abs(x), axis=1))
    q = fp8_codes(x, s[:, None])
    # stored as bytes: the caller passes a uint8 view (an fp8 store of masked lanes is
    # what some triton versions refuse)
    tl.store(q_ptr + t * stride_qt + k, q, mask=mask)
    tl.store(s_ptr + t * stride_st + g * stride_sg, s, mask=g < G)


@triton.jit
def _int8_row_quant_kernel(x_ptr, q_ptr, s_ptr, K, stride_xt, stride_qt, BLOCK: tl.constexpr):
    t = tl.program_id(0).to(tl.int64)
    amax = tl.zeros((BLOCK,), dtype=tl.float32)
    for k0 in range(0, K, BLOCK):
        k = k0 + tl.arange(0, BLOCK)
        x = tl.load(x_ptr + t * stride_xt + k, mask=k < K, other=0.0).to(tl.float32)
        amax = tl.maximum(amax, tl.abs(x))
    s = int8_scale(tl.max(amax, axis=0))
    for k0 in range(0, K, BLOCK):
        k = k0 + tl.arange(0, BLOCK)
        x = tl.load(x_ptr + t * stride_xt + k, mask=k < K, other=0.0).to(tl.float32)
        q = int8_codes(x, s)
        tl.store(q_ptr + t * stride_qt + k, q, mask=k < K)
    tl.store(s_ptr + t, s)


def quant_fp8_groups(x: torch.Tensor, group: int, pad_rows_to: int = 1, scales_col_major: bool = False):
    """x [T, K] -> (q float8_e4m3fn [T_pad, K], s float32 [T_pad, G]); rows past T are zero
    (scale 1e-10 / 448).  scales_col_major: s has strides (1, T_pad)."""
    T, K = x.shape
    G = cdiv(K, group)
    Tp = cdiv(max(T, 1), pad_rows_to) * pad_rows_to
    q = torch.empty((Tp, K), dtype=torch.float8_e4m3fn, device=x.device)
    s = torch.empty((G, Tp), dtype=torch.float32, device=x.device).t() if scales_col_major else \
        torch.empty((Tp, G), dtype=torch.float32, device=x.device)
    if T == 0:
        return q, s
    interp = on_interpreter(x)
    block_c = next_pow2(min(group, K))
    block_g = max(1, min(next_pow2(G), (1024 if not interp else 256) // block_c))
    x = x if x.stride(-1) == 1 else x.contiguous()
    _fp8_group_quant_kernel[(Tp, cdiv(G, block_g))](x, q.view(torch.uint8), s, T, K, G, group, x.stride(0), q.stride(0), s.stride(0),
                                  s.stride(1), BLOCK_C=block_c, BLOCK_G=block_g,
                                  num_warps=1 if interp else 8 if block_c >= 4096 else 4)
    return q, s


def quant_int8_rows(x: torch.Tensor):
    """x [T, K] -> (q int8 [T, K], s float32 [T]): quant_per_token_int8 in one launch."""
    T, K = x.shape
    q = torch.empty((T, K), dtype=torch.int8, device=x.device)
    s = torch.empty((T,), dtype=torch.float32, device=x.device)
    if T == 0:
        return q, s
    interp = on_interpreter(x)
    x = x if x.stride(-1) == 1 else x.contiguous()
    block = min(next_pow2(K), 256 if interp else 2048)
    _int8_row_quant_kernel[(T,)](x, q, s, K, x.stride(0), q.stride(0), BLOCK=block, num_warps=1 if interp else 4)
    return q, s
