"""W4A16 / W8A16 GEMM with the weights dequantized inside the kernel: AWQ (GEMM packing)
and GPTQ (packed along K, true zeros, g_idx) layouts, the contracts of core/ops/quant.py
and core/ops/gptq.py.

M <= 16 (decode) is memory-bound and runs the GEMV kernel: each program owns BLOCK_N
output columns and a slice of K (split-K), loads each packed int32 word of its tile once
(as one coalesced row segment), unpacks the nibbles in registers, and reads one scale and
zero vector per K tile (BLOCK_K divides the group, so a tile sits in one group).  M == 1
multiplies in float32 on the CUDA cores (summed over K once, at the end); 2..16 rows use
one tl.dot.  Partial sums
go to a float32 buffer that one torch sum reduces (deterministic, unlike atomics).
GPTQ with act-order g_idx (groups not contiguous in K) gathers its scales per row.
M up to DEQUANT_MIN_M runs the tiled kernel below (split-K up to M = 64); from there on
(prefill) the weight is dequantized to the activations' dtype by one kernel pass and the
GEMM is torch's (cuBLAS): at that M the GEMM's compute outweighs the extra weight pass.
"""
import weakref

import torch
import triton
import triton.language as tl

from .common import cdiv, dot_precision, on_interpreter, sm_count


@triton.jit
def cdiv_n(a, b: tl.constexpr):
    return (a + b - 1) // b


@triton.jit
def _unpack(words, R: tl.constexpr, C: tl.constexpr, AXIS: tl.constexpr, AWQ_ORDER: tl.constexpr,
            BITS: tl.constexpr):
    """int32 words [R, C] -> values [R * PER, C] (AXIS 0: packed along rows, GPTQ's qweight)
    or [R, C * PER] (AXIS 1: along columns; AWQ_ORDER: AWQ's 0,2,4,6,1,3,5,7 nibble order).
    Shift then mask: the sign bits an arithmetic >> brings in never survive the mask."""
    PER: tl.constexpr = 32 // BITS
    MASK: tl.constexpr = (1 << BITS) - 1
    i = tl.arange(0, PER)
    if AWQ_ORDER:
        shift = ((i // 2) + (i % 2) * 4) * 4
    else:
        shift = i * BITS
    if AXIS == 0:
        v = (words[:, None, :] >> shift[None, :, None]) & MASK
        return tl.reshape(v, (R * PER, C))
    else:
        v = (words[:, :, None] >> shift[None, None, :]) & MASK
        return tl.reshape(v, (R, C * PER))


@triton.jit
def _w4a16_gemv_kernel(x_ptr, qw_ptr, qz_ptr, s_ptr, gidx_ptr, out_ptr, M, N, K, group, k_per_split,
                       stride_xm, stride_qwr, stride_qzr, stride_sr, stride_os, stride_om,
                       FMT: tl.constexpr, BITS: tl.constexpr, ACT_ORDER: tl.constexpr,
                       BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                       PREC: tl.constexpr):
    PER: tl.constexpr = 32 // BITS
    MASK: tl.constexpr = (1 << BITS) - 1
    pid_n, pid_s = tl.program_id(0), tl.program_id(1)
    m = tl.arange(0, BLOCK_M)
    mmask = m < M
    n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    nmask = n < N
    # packed columns of this tile (AWQ qweight; both formats' qzeros): BLOCK_N / PER words
    c = pid_n * (BLOCK_N // PER) + tl.arange(0, BLOCK_N // PER)
    cmask = c < cdiv_n(N, PER)
    if BLOCK_M == 1:
        # products summed over K only once, after the loop: a cross-thread reduction per tile
        # would cost more than the tile's loads
        acc = tl.zeros((BLOCK_K, BLOCK_N), dtype=tl.float32)
    else:
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    k_lo = pid_s * k_per_split
    k_hi = tl.minimum(k_lo + k_per_split, K)
    for k0 in range(k_lo, k_hi, BLOCK_K):
        k = k0 + tl.arange(0, BLOCK_K)
        kmask = k < k_hi
        if FMT == 0:
            words = tl.load(qw_ptr + k[:, None].to(tl.int64) * stride_qwr + c[None, :],
                            mask=kmask[:, None] & cmask[None, :], other=0)
            q = _unpack(words, BLOCK_K, BLOCK_N // PER, 1, True, BITS)
        else:
            r = k0 // PER + tl.arange(0, BLOCK_K // PER)
            words = tl.load(qw_ptr + r[:, None].to(tl.int64) * stride_qwr + n[None, :],
                            mask=(r < cdiv_n(k_hi, PER))[:, None] & nmask[None, :], other=0)
            q = _unpack(words, BLOCK_K // PER, BLOCK_N, 0, False, BITS)
        if ACT_ORDER:
            # groups scattered over K: one scale / zero row per input row
            g = tl.load(gidx_ptr + k, mask=kmask, other=0)
            zw = tl.load(qz_ptr + g[:, None].to(tl.int64) * stride_qzr + (n // PER)[None, :],
                         mask=kmask[:, None] & nmask[None, :], other=0)
            z = (zw >> ((n % PER) * BITS)[None, :]) & MASK
            sc = tl.load(s_ptr + g[:, None].to(tl.int64) * stride_sr + n[None, :],
                         mask=kmask[:, None] & nmask[None, :], other=0.0)
            w = (q - z).to(tl.float32) * sc.to(tl.float32)
        else:
            g = (k0 // group).to(tl.int64)
            zw = tl.load(qz_ptr + g * stride_qzr + c, mask=cmask, other=0)
            z = _unpack(zw[None, :], 1, BLOCK_N // PER, 1, FMT == 0, BITS)
            sc = tl.load(s_ptr + g * stride_sr + n, mask=nmask, other=0.0)
            w = (q - z).to(tl.float32) * sc.to(tl.float32)
        # rounded to the activations' dtype as the reference's dequantized weight is
        w = tl.where(kmask[:, None], w, 0.0).to(x_ptr.dtype.element_ty)
        if BLOCK_M == 1:
            x = tl.load(x_ptr + k, mask=kmask, other=0.0).to(tl.float32)
            acc += x[:, None] * w.to(tl.float32)
        else:
            x = tl.load(x_ptr + m[:, None].to(tl.int64) * stride_xm + k[None, :],
                        mask=mmask[:, None] & kmask[None, :], other=0.0)
            acc += tl.dot(x, w, input_precision=PREC)
    if BLOCK_M == 1:
        tl.store(out_ptr + pid_s * stride_os + n, tl.sum(acc, axis=0), mask=nmask)
    else:
        tl.store(out_ptr + pid_s * stride_os + m[:, None].to(tl.int64) * stride_om + n[None, :], acc,
                 mask=mmask[:, None] & nmask[None, :])



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


@triton.jit
def _w4a16_dequant_kernel(qw_ptr, qz_ptr, s_ptr, gidx_ptr, w_ptr, N, K, group,
                          stride_qwr, stride_qzr, stride_sr, stride_wk,
                          FMT: tl.constexpr, BITS: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """Dense W [K, N] in w's dtype: (q - z) * s, per row of scales / zeros (any g_idx)."""
    PER: tl.constexpr = 32 // BITS
    pid_k, pid_n = tl.program_id(0), tl.program_id(1)
    k = pid_k * BLOCK_K + tl.arange(0, BLOCK_K)
    kmask = k < K
    n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    nmask = n < N
    c = pid_n * (BLOCK_N // PER) + tl.arange(0, BLOCK_N // PER)
    cmask = c < cdiv_n(N, PER)
    if FMT == 0:
        words = tl.load(qw_ptr + k[:, None].to(tl.int64) * stride_qwr + c[None, :],
                        mask=kmask[:, None] & cmask[None, :], other=0)
        q = _unpack(words, BLOCK_K, BLOCK_N // PER, 1, True, BITS)
        g = k // group
    else:
        r = pid_k * (BLOCK_K // PER) + tl.arange(0, BLOCK_K // PER)
        words = tl.load(qw_ptr + r[:, None].to(tl.int64) * stride_qwr + n[None, :],
                        mask=(r < cdiv_n(K, PER))[:, None] & nmask[None, :], other=0)
        q = _unpack(words, BLOCK_K // PER, BLOCK_N, 0, False, BITS)
        g = tl.load(gidx_ptr + k, mask=kmask, other=0)
    zw = tl.load(qz_ptr + g[:, None].to(tl.int64) * stride_qzr + c[None, :], mask=kmask[:, None] & cmask[None, :],
                 other=0)
    z = _unpack(zw, BLOCK_K, BLOCK_N // PER, 1, FMT == 0, BITS)
    sc = tl.load(s_ptr + g[:, None].to(tl.int64) * stride_sr + n[None, :], mask=kmask[:, None] & nmask[None, :],
                 other=0.0)
    w = (q - z).to(tl.float32) * sc.to(tl.float32)
    tl.store(w_ptr + k[:, None].to(tl.int64) * stride_wk + n[None, :], w.to(w_ptr.dtype.element_ty),
             mask=kmask[:, None] & nmask[None, :])


DEQUANT_MIN_M = 256   # prefill-sized M: dequantize once, then cuBLAS


def _dequant_matmul(fmt, x, qweight, qzeros, scales, g_idx, group, bits, bias, N):
    interp = on_interpreter(x)
    K = x.shape[1]
    per = 32 // bits
    bn, bk = (32, 32) if interp else (128, 64)
    w = torch.empty((K, N), dtype=x.dtype, device=x.device)
    _w4a16_dequant_kernel[(cdiv(K, bk), cdiv(N, bn))](
        qweight, qzeros, scales, x if g_idx is None else g_idx, w, N, K, group,
        qweight.stride(0), qzeros.stride(0), scales.stride(0), w.stride(0),
        FMT=fmt, BITS=bits, BLOCK_N=bn, BLOCK_K=max(bk, per), num_warps=1 if interp else 4)
    y = x @ w
    return y if bias is None else y + bias.to(y.dtype)


# (BLOCK_N, BLOCK_K, num_warps) forced for the GEMV (benchmarks/gpu_kvquant_check.sh sweeps it)
GEMV_CONFIG_OVERRIDE: dict = {}


def _gemv_block_k(group: int, K: int, per: int, interp: bool) -> int | None:
    """Largest K tile that sits inside one group (None: no such tile; the tiled kernel runs)."""
    for bk in ((32, 16) if interp else (128, 64, 32, 16)):
        if bk % per == 0 and (group % bk == 0 or group >= K):
            return bk
    return None


def _gemv_config(M, N, K, group, per, interp, device):
    """(BLOCK_M, BLOCK_N, BLOCK_K, splits, num_warps), or None when the GEMV cannot run."""
    bk = _gemv_block_k(group, K, per, interp)
    if bk is None:
        return None
    bm = 1 if M == 1 else 16
    if interp:
        return bm, 32, bk, (2 if K >= 2 * bk else 1), 1
    bn, warps = 128, 4
    if GEMV_CONFIG_OVERRIDE:
        bn, bk_o, warps = GEMV_CONFIG_OVERRIDE["config"]
        if bk_o <= bk and bk % bk_o == 0:
            bk = bk_o
    elif bk > 64 or (M == 1 and bk > 32):
        # per thread at 4 warps: a 64 x 128 tile is 64 float32 registers; M == 1 also keeps an
        # accumulator of the tile's shape, so 32 rows there
        bk = 32 if M == 1 else 64
    # about four programs per SM (each streams >= 2 K tiles): enough loads in flight
    splits = max(1, min(cdiv(4 * sm_count(device), cdiv(N, bn)), cdiv(K, 2 * bk), 32))
    return bm, bn, bk, splits, warps


_GIDX: dict = {}   # id(g_idx) -> (weakref, group size when g_idx is i // group, else None)


def _gptq_group(g_idx: torch.Tensor, groups: int) -> int | None:
    """The group size if g_idx is the plain i // group (checked once per tensor: it syncs), else None."""
    hit = _GIDX.get(id(g_idx))
    if hit is not None and hit[0]() is g_idx:
        return hit[1]
    if g_idx.is_cuda and torch.cuda.is_current_stream_capturing():
        return None      # no sync while a graph is captured: the act-order path is right for any g_idx
    K = g_idx.shape[0]
    gs = cdiv(K, max(1, groups))
    plain = bool(torch.equal(g_idx.long().cpu(), torch.arange(K) // gs))
    _GIDX[id(g_idx)] = (weakref.ref(g_idx), gs if plain else None)
    return gs if plain else None


def _gemv(fmt, x, qweight, qzeros, scales, g_idx, group, bits, bias, N):
    """The M <= 16 path, or None when its tiles do not fit this group size."""
    interp = on_interpreter(x)
    M, K = x.shape
    per = 32 // bits
    act_order = False
    if fmt == 1:
        gs = _gptq_group(g_idx, scales.shape[0])
        act_order = gs is None
        group = K if act_order else gs
    cfg = _gemv_config(M, N, K, K if act_order else group, per, interp, x.device)
    if cfg is None:
        return None
    bm, bn, bk, splits, warps = cfg
    if bn % per:
        return None
    k_per_split = cdiv(cdiv(K, splits), bk) * bk
    splits = cdiv(K, k_per_split)
    part = torch.empty((splits, M, N), dtype=torch.float32, device=x.device)
    _w4a16_gemv_kernel[(cdiv(N, bn), splits)](
        x, qweight, qzeros, scales, x if g_idx is None else g_idx, part, M, N, K, group, k_per_split,
        x.stride(0), qweight.stride(0), qzeros.stride(0), scales.stride(0), part.stride(0), part.stride(1),
        FMT=fmt, BITS=bits, ACT_ORDER=act_order, BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk,
        PREC=dot_precision(x.dtype), num_warps=warps, num_stages=1 if interp else 3)
    y = part.sum(0) if splits > 1 else part[0]
    if bias is not None:
        y = y + bias.float()
    return y.to(x.dtype)


def _contig(t):
    # every kernel here indexes the last dim with stride 1
    return t if t is None or t.stride(-1) == 1 else t.contiguous()


def _launch(fmt, x, qweight, qzeros, scales, g_idx, group, bits, bias, N):
    interp = on_interpreter(x)
    M, K = x.shape
    x, qweight, qzeros, scales, g_idx = (_contig(t) for t in (x, qweight, qzeros, scales, g_idx))
    if fmt == 1:
        _gptq_group(g_idx, scales.shape[0])     # any eager call (prefill) learns g_idx before a capture
    if 0 < M <= 16:
        y = _gemv(fmt, x, qweight, qzeros, scales, g_idx, group, bits, bias, N)
        if y is not None:
            return y
    if M >= DEQUANT_MIN_M:
        return _dequant_matmul(fmt, x, qweight, qzeros, scales, g_idx, group, bits, bias, N)
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
