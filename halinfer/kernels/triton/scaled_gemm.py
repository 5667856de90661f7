"""8-bit GEMMs with per-row and per-group scales: W8A8 int8 (core/ops/quant.py: w8a8_linear)
and FP8 e4m3 (core/ops/fp8.py: fp8_linear, block-scaled or per channel).

Activations are quantized per token first (torch ops on the device, the contract's own
definition), then one Triton GEMM multiplies the 8-bit tiles (int8: int32 accumulation,
exact; fp8: float32) and applies scales at each K tile: a tile never straddles a scale
group because BLOCK_K divides the group width.

FP8 with one scale group per row (per-channel or per-tensor weights) and bf16 activations
goes to torch._scaled_mm on GPUs that have it (cuBLASLt, rowwise scales: scale_a [M, 1],
scale_b [1, N], bf16 out; Hopper / Ada); block-scaled weights (128x128) stay on the kernel.
"""
import torch
import triton
import triton.language as tl

from halinfer.core.ops.fp8 import quant_per_token_group_fp8
from halinfer.core.ops.quant import quant_per_token_int8

from .common import cdiv, on_interpreter


@triton.jit
def _scaled_gemm_kernel(a_ptr, b_ptr, as_ptr, bs_ptr, bias_ptr, out_ptr, M, N, K, group,
                        stride_am, stride_bn, stride_asm, stride_bsn, stride_om,
                        INT8: tl.constexpr, HAS_BIAS: tl.constexpr,
                        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    mmask, nmask = m < M, n < N
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        k = k0 + tl.arange(0, BLOCK_K)
        kmask = k < K
        # fp8 operands arrive as their uint8 bytes: a masked load's integer 0 cannot be cast to
        # fp8e4nv (triton 3.6 refuses to compile it), while byte 0 bitcast is +0.0 in e4m3.
        a = tl.load(a_ptr + m[:, None].to(tl.int64) * stride_am + k[None, :], mask=mmask[:, None] & kmask[None, :],
                    other=0)
        b = tl.load(b_ptr + n[None, :].to(tl.int64) * stride_bn + k[:, None], mask=kmask[:, None] & nmask[None, :],
                    other=0)
        if not INT8:
            a = a.to(tl.float8e4nv, bitcast=True)
            b = b.to(tl.float8e4nv, bitcast=True)
        if INT8:
            part = tl.dot(a, b, out_dtype=tl.int32).to(tl.float32)
        else:
            part = tl.dot(a, b, out_dtype=tl.float32)
        g = k0 // group
        sa = tl.load(as_ptr + m * stride_asm + g, mask=mmask, other=0.0)
        sb = tl.load(bs_ptr + n * stride_bsn + g, mask=nmask, other=0.0)
        acc += part * sa[:, None] * sb[None, :]
    if HAS_BIAS:
        acc += tl.load(bias_ptr + n, mask=nmask, other=0.0).to(tl.float32)[None, :]
    tl.store(out_ptr + m[:, None].to(tl.int64) * stride_om + n[None, :], acc.to(out_ptr.dtype.element_ty),
             mask=mmask[:, None] & nmask[None, :])


def _block_k(group: int, K: int, interp: bool) -> int:
    for bk in ((32, 16) if interp else (128, 64, 32, 16)):
        if group % bk == 0 or group >= K and bk <= max(16, K):
            return bk
    return 16


def _launch(a, a_scale, b, b_scale, group, bias, out_dtype, int8):
    interp = on_interpreter(a)
    M, K = a.shape
    N = b.shape[0]
    out = torch.empty((M, N), dtype=out_dtype, device=a.device)
    if M == 0:
        return out
    bm = 16 if (interp or M <= 16) else 64 if M <= 64 else 128
    bn = 32 if interp else 128
    bk = _block_k(group, K, interp)
    if not int8:
        a, b = a.view(torch.uint8), b.view(torch.uint8)
    _scaled_gemm_kernel[(cdiv(M, bm), cdiv(N, bn))](
        a, b, a_scale, b_scale, a if bias is None else bias, out, M, N, K, max(group, K) if group >= K else group,
        a.stride(0), b.stride(0), a_scale.stride(0), b_scale.stride(0), out.stride(0),
        INT8=int8, HAS_BIAS=bias is not None, BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk,
        num_warps=1 if interp else 4, num_stages=1 if interp else 3)
    return out


def w8a8_linear(x, weight, weight_scale, bias=None):
    """core.ops.quant.w8a8_linear's contract."""
    xq, xs = quant_per_token_int8(x)
    K = x.shape[1]
    return _launch(xq, xs[:, None].contiguous(), weight, weight_scale.float()[:, None].contiguous(), K, bias,
                   x.dtype, True)


_SCALED_MM_BROKEN: dict = {}   # device -> why torch._scaled_mm failed there once (then: the kernel)


def _scaled_mm_ok(x, weight, block_k) -> bool:
    K, N = x.shape[1], weight.shape[0]
    if x.device.type != "cuda" or x.dtype != torch.bfloat16 or block_k < K or not hasattr(torch, "_scaled_mm"):
        return False
    if K % 16 or N % 16 or weight.stride(1) != 1 or str(x.device) in _SCALED_MM_BROKEN:
        return False
    return torch.cuda.get_device_capability(x.device) >= (8, 9)


def _scaled_mm(xq, xs, weight, ws, bias, out_dtype):
    """Rowwise-scaled FP8 GEMM in cuBLASLt; None when this torch / GPU refuses it."""
    try:
        y = torch._scaled_mm(xq, weight.t(), scale_a=xs.reshape(-1, 1).contiguous(),
                             scale_b=ws.reshape(1, -1).contiguous(), out_dtype=out_dtype)
    except (RuntimeError, TypeError, NotImplementedError) as e:
        _SCALED_MM_BROKEN[str(xq.device)] = f"{type(e).__name__}: {e}"
        return None
    return y if bias is None else y + bias.to(y.dtype)


def fp8_linear(x, weight, weight_scale, block_k, bias=None, input_scale=None):
    """core.ops.fp8.fp8_linear's contract."""
    T, K = x.shape
    if input_scale is not None:
        xq = (x.float() / input_scale.float()).clamp(-448.0, 448.0).to(torch.float8_e4m3fn)
        xs = input_scale.float().reshape(1, 1).expand(T, 1).contiguous()
    else:
        xq, xs = quant_per_token_group_fp8(x, block_k)
        xq = xq.contiguous()
    if T and _scaled_mm_ok(x, weight, block_k):
        y = _scaled_mm(xq, xs.float(), weight, weight_scale.float(), bias, x.dtype)
        if y is not None:
            return y
    return _launch(xq, xs, weight, weight_scale.float().contiguous(), block_k, bias, x.dtype, False)
