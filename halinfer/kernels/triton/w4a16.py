"""W4A16 / W8A16 GEMM with the weights dequantized inside the kernel: AWQ (GEMM packing)
and GPTQ (packed along K, true zeros, g_idx) layouts, the contracts of core/ops/quant.py
and core/ops/gptq.py.

Small M (decode) is memory-bound: the K loop is split across programs (split-K) so that
enough programs stream the packed weight; partial sums go to a float32 buffer that one
torch sum reduces.  Large M runs the same tiles without splitting.
"""
import torch
import triton
import triton.language as tl

from .common import cdiv, on_interpreter, sm_count


@triton.jit
def _w4a16_kernel(x_ptr, qw_ptr, qz_ptr, s_ptr, gidx_ptr, out_ptr, M, N, K, group, k_per_split,
                  stride_xm, stride_qwr, stride_qzr, stride_sr, stride_os, stride_om,
                  FMT: tl.constexpr, BITS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                  BLOCK_K: tl.constexpr):
    pid_m, pid_n, pid_s = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mmask, nmask = m < M, n < N
    PER: tl.constexpr = 32 // BITS
    MASK: tl.constexpr = (1 << BITS) - 1
    if FMT == 0:
        # AWQ: nibble i of a packed column holds column 8c + (0,2,4,6,1,3,5,7)[i]
        j = n % 8
        col_shift = ((j // 2) + (j % 2) * 4) * 4
        col_word = n // 8
    else:
        col_shift = (n % PER) * BITS
        col_word = n // PER
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    k_lo = pid_s * k_per_split
    k_hi = tl.minimum(k_lo + k_per_split, K)
    for k0 in range(k_lo, k_hi, BLOCK_K):
        k = k0 + tl.arange(0, BLOCK_K)
        kmask = k < k_hi
        x = tl.load(x_ptr + m[:, None].to(tl.int64) * stride_xm + k[None, :], mask=mmask[:, None] & kmask[None, :],
                    other=0.0)
        wmask = kmask[:, None] & nmask[None, :]
        if FMT == 0:
            g = k // group
            packed = tl.load(qw_ptr + k[:, None].to(tl.int64) * stride_qwr + col_word[None, :], mask=wmask, other=0)
            q = (packed >> col_shift[None, :]) & MASK
        else:
            g = tl.load(gidx_ptr + k, mask=kmask, other=0)
            packed = tl.load(qw_ptr + (k // PER)[:, None].to(tl.int64) * stride_qwr + n[None, :], mask=wmask, other=0)
            q = (packed >> ((k % PER) * BITS)[:, None]) & MASK
        zp = tl.load(qz_ptr + g[:, None].to(tl.int64) * stride_qzr + col_word[None, :], mask=wmask, other=0)
        z = (zp >> col_shift[None, :]) & MASK
        s = tl.load(s_ptr + g[:, None].to(tl.int64) * stride_sr + n[None, :], mask=wmask, other=0.0)
        w = ((q - z).to(tl.float32) * s.to(tl.float32)).to(x.dtype)
        acc += tl.dot(x, w)
    tl.store(out_ptr + pid_s * stride_os + m[:, None].to(tl.int64) * stride_om + n[None, :], acc,
             mask=mmask[:, None] & nmask[None, :])


def _config(M: int, N: int, K: int, interp: bool, device) -> tuple[int, int, int, int, int]:
    """(BLOCK_M, BLOCK_N, BLOCK_K, splits, num_warps)."""
    if interp:
        return 16, 32, 32, (2 if K >= 64 else 1), 1
    if M <= 16:
        bm, bn, bk = 16, 64, 128
    elif M <= 64:
        bm, bn, bk = 64, 64, 64
    else:
        bm, bn, bk = 128, 128, 32
    tiles = cdiv(M, bm) * cdiv(N, bn)
    splits = max(1, min(cdiv(2 * sm_count(device), tiles), cdiv(K, bk * 4), 16)) if M <= 64 else 1
    return bm, bn, bk, splits, 4


def _launch(fmt, x, qweight, qzeros, scales, g_idx, group, bits, bias, N):
    interp = on_interpreter(x)
    M, K = x.shape
    if x.stride(-1) != 1:
        x = x.contiguous()
    bm, bn, bk, splits, warps = _config(M, N, K, interp, x.device)
    k_per_split = cdiv(cdiv(K, splits), bk) * bk
    splits = cdiv(K, k_per_split)
    part = torch.empty((splits, M, N), dtype=torch.float32, device=x.device)
    if M > 0:
        _w4a16_kernel[(cdiv(M, bm), cdiv(N, bn), splits)](
            x, qweight, qzeros, scales, x if g_idx is None else g_idx, part, M, N, K, group, k_per_split,
            x.stride(0), qweight.stride(0), qzeros.stride(0), scales.stride(0), part.stride(0), part.stride(1),
            FMT=fmt, BITS=bits, BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, num_warps=warps)
    y = part.sum(0) if splits > 1 else part[0]
    if bias is not None:
        y = y + bias.float()
    return y.to(x.dtype)


def awq_linear(x, qweight, scales, qzeros, group_size, bias=None):
    """core.ops.quant.w4a16_linear's contract."""
    return _launch(0, x, qweight, qzeros, scales, None, group_size, 4, bias, scales.shape[1])


def gptq_linear(x, qweight, qzeros, scales, g_idx, bits, bias=None):
    """core.ops.gptq.gptq_linear's contract."""
    return _launch(1, x, qweight, qzeros, scales, g_idx, 1, bits, bias, scales.shape[1])
