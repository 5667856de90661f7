"""W4A16 AWQ GEMV for decode (M <= 16), v4: v3a's formulation with one tensor-core dot a trip.

v3a (w4a16_v3.py) makes four dots a trip, one per nibble plane, and the sm_90 SASS waits for
each one to finish (WARPGROUP.DEPBAR.LE gsb0, 0) before the next plane is unpacked, so a trip
holds four full wgmma latencies back to back; Nsight Compute measured the loop latency-bound
(0.23-0.42 instructions issued a cycle a scheduler, docs/quantization.md).  v4 stacks the four
planes into one [BLOCK_N, BLOCK_K] operand (row R = plane R // Q of int16 column R % Q, Q =
BLOCK_N / 4) and makes one dot of it: one wait a trip.  Scales and zeros are then per row of the
stacked tile (output column 8 (jc // 2) + jc % 2 + 2 j), loaded a trip ahead as in v3a, and the
result rows are written to their columns directly.  Opt-in (HALINFER_W4A16_GEMV=v4) until it
is timed on a GPU.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .common import cdiv, on_interpreter, sm_count
from .w4a16 import _split_k_buffers, _v2_out, _v2_reduce
from .w4a16_v3 import _plane3, _xh_tile


@triton.jit
def _stack4(p0, p1, p2, p3):
    """[Q, K] x 4 -> [4Q, K], rows p0 then p1, p2, p3."""
    Q: tl.constexpr = p0.shape[0]
    BK: tl.constexpr = p0.shape[1]
    a01 = tl.reshape(tl.permute(tl.join(p0, p1), (2, 0, 1)), (2 * Q, BK))
    a23 = tl.reshape(tl.permute(tl.join(p2, p3), (2, 0, 1)), (2 * Q, BK))
    return tl.reshape(tl.permute(tl.join(a01, a23), (2, 0, 1)), (4 * Q, BK))


@triton.jit
def _row_scales(s_ptr, z16, g, stride_sr, stride_qzr, jc, col, shift, rmask, EVEN_N: tl.constexpr):
    """Group g's scale and zero nibble of each stacked row (column col, int16 column jc)."""
    if EVEN_N:
        s = tl.load(s_ptr + g * stride_sr + col)
        z = tl.load(z16 + g * (2 * stride_qzr) + jc)
    else:
        s = tl.load(s_ptr + g * stride_sr + col, mask=rmask, other=0.0)
        z = tl.load(z16 + g * (2 * stride_qzr) + jc, mask=rmask, other=0)
    return s, (z.to(tl.int32) >> shift) & 0xF


@triton.jit
def _w4a16_gemv_v4_kernel(x_ptr, qw_ptr, qz_ptr, s_ptr, b_ptr, y_ptr, part_ptr, cnt_ptr, M, N, K,
                          k_per_split, stride_xm, stride_qwr, stride_qzr, stride_sr, stride_ym,
                          DT: tl.constexpr, GROUP: tl.constexpr, HAS_BIAS: tl.constexpr, SPLIT: tl.constexpr,
                          EVEN_K: tl.constexpr, EVEN_N: tl.constexpr, ASM: tl.constexpr,
                          BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                          ONE_ROW: tl.constexpr):
    """Same contract and split-K reduction as v3a (int16 column jc of qweight row k: nibble j is
    output column 8 (jc // 2) + 2 j + jc % 2)."""
    pid_n, pid_s = tl.program_id(0), tl.program_id(1)
    BIAS: tl.constexpr = 1024.0 if DT == tl.float16 else 128.0
    Q: tl.constexpr = BLOCK_N // 4
    m = tl.arange(0, BLOCK_M)
    xcol = x_ptr + tl.minimum(m, M - 1)[None, :].to(tl.int64) * stride_xm
    # columns of the loaded int16 tile, and of the stacked rows
    jq = pid_n * Q + tl.arange(0, Q)
    qmask = jq < N // 4
    R = tl.arange(0, BLOCK_N)
    j = R // Q
    jc = pid_n * Q + R % Q
    rmask = jc < N // 4
    col = 8 * (jc // 2) + jc % 2 + 2 * j
    shift = 4 * j
    if DT == tl.float16:
        mul = tl.where(j % 2 == 1, 16.0, 1.0)   # _plane3 keeps fp16's odd nibbles at bits 4..7
    else:
        mul = tl.full((BLOCK_N,), 1.0, tl.float32)
    q16 = qw_ptr.to(tl.pointer_type(tl.int16))
    z16 = qz_ptr.to(tl.pointer_type(tl.int16))
    a = tl.zeros((BLOCK_N, BLOCK_M), dtype=tl.float32)
    c = tl.zeros((BLOCK_N,), dtype=tl.float32)
    k_lo = pid_s * k_per_split
    k_hi = tl.minimum(k_lo + k_per_split, K)
    if GROUP == 0:
        g = 0
    else:
        g = k_lo // GROUP
    s, z = _row_scales(s_ptr, z16, g, stride_sr, stride_qzr, jc, col, shift, rmask, EVEN_N)
    kk = tl.arange(0, BLOCK_K)
    if ONE_ROW:
        xv = tl.load(x_ptr + k_lo + kk, mask=k_lo + kk < k_hi, other=0.0)
    hoff = kk[None, :] * (2 * stride_qwr) + jq[:, None]
    for k0 in range(k_lo, k_hi, BLOCK_K):
        if GROUP == 0:
            sn, zn = s, z
        else:
            gn = tl.minimum(k0 + BLOCK_K, k_hi - 1) // GROUP
            sn, zn = _row_scales(s_ptr, z16, gn, stride_sr, stride_qzr, jc, col, shift, rmask, EVEN_N)
        if ONE_ROW:
            xs = tl.sum(xv.to(tl.float32), axis=0)
            xv = tl.load(x_ptr + k0 + BLOCK_K + kk, mask=k0 + BLOCK_K + kk < k_hi, other=0.0)
        xt, h = _xh_tile(q16, hoff, xcol, kk, k0, k_hi, stride_qwr, qmask, EVEN_K, EVEN_N)
        w = _stack4(_plane3(h, 0, DT, ASM), _plane3(h, 1, DT, ASM), _plane3(h, 2, DT, ASM), _plane3(h, 3, DT, ASM))
        p = tl.dot(w, xt)
        # x.(q - z) = (p - (BIAS + MUL z) sum x) / MUL, times the group's scale (w4a16_v3._acc_plane)
        zb = z.to(tl.float32) * mul + BIAS
        sf = s.to(tl.float32) / mul
        if ONE_ROW:
            a += sf[:, None] * p
            c += sf * zb * xs
        else:
            a += sf[:, None] * (p - zb[:, None] * tl.sum(xt.to(tl.float32), axis=0)[None, :])
        s, z = sn, zn
    if ONE_ROW:
        a -= c[:, None]
    _v2_out(a, tl.where(rmask, col, N), m, M, N, y_ptr, stride_ym, part_ptr, pid_s, b_ptr, HAS_BIAS, SPLIT)
    if SPLIT:
        _v2_reduce(part_ptr, cnt_ptr, b_ptr, y_ptr, M, N, stride_ym, pid_n, HAS_BIAS, BLOCK_M, BLOCK_N, ONE_ROW)


# (BLOCK_N, BLOCK_K, num_warps, num_stages[, splits]) forced (benchmarks); splits None: one wave
CONFIG_OVERRIDE: dict = {}
PROGS_PER_SM = 4   # 105 registers x 128 threads, 37 KB shared: 4 resident (registers allow 4.8)


def config(M, N, K, group, interp, sms):
    """(BLOCK_N, BLOCK_K, splits, num_warps, num_stages), or None when no K tile fits the group."""
    bk = next((b for b in (128, 64, 32, 16) if group % b == 0 or group >= K), None)
    if bk is None or N % 8 or M > 16:
        return None
    if interp:
        return 64, min(bk, 64), max(1, min(4, cdiv(K, min(bk, 64)) // 2)), 1, 1
    # 128 x 64, 4 stages: 105 registers, no spill in the sm_90 SASS (256 x 128: 255 and a stack);
    # more programs an SM (PROGS_PER_SM) at the cost of 3.7 instructions a weight against 2.6
    bn, bk, warps, stages, splits = 128, min(bk, 64), 4, 4, None
    if CONFIG_OVERRIDE:
        cfg = CONFIG_OVERRIDE["config"]
        bn, bk_o, warps, stages = cfg[:4]
        splits = cfg[4] if len(cfg) > 4 else None
        if bk_o <= bk and bk % bk_o == 0:
            bk = bk_o
    if splits is None:
        splits = max(1, min(PROGS_PER_SM * sms // cdiv(N, bn), cdiv(K, bk) // 2, 32))
    splits = max(1, min(splits, cdiv(K, bk) // 2, K // (64 * M)))
    return bn, bk, splits, warps, stages


def gemv(x, qweight, qzeros, scales, group, bias, N):
    """AWQ 4-bit, fp16 / bf16 x, M <= 16, the w4a16_linear contract: y [M, N] in x's dtype
    (None: no tile fits; the caller falls back)."""
    interp = on_interpreter(x)
    M, K = x.shape
    cfg = config(M, N, K, group, interp, sm_count(x.device))
    if cfg is None or x.dtype not in (torch.float16, torch.bfloat16):
        return None
    bn, bk, splits, warps, stages = cfg
    k_per_split, splits, tiles, cnt, y, part = _split_k_buffers(x, N, bn, bk, splits)
    _w4a16_gemv_v4_kernel[(tiles, splits)](
        x, qweight, qzeros, scales, y if bias is None else bias, y, part, y if cnt is None else cnt,
        M, N, K, k_per_split, x.stride(0), qweight.stride(0), qzeros.stride(0), scales.stride(0), y.stride(0),
        DT=tl.float16 if x.dtype == torch.float16 else tl.bfloat16, GROUP=0 if group >= K else group,
        HAS_BIAS=bias is not None, SPLIT=splits > 1, EVEN_K=K % bk == 0, EVEN_N=N % bn == 0,
        ASM=not interp and torch.version.hip is None, BLOCK_M=16, BLOCK_N=bn, BLOCK_K=bk, ONE_ROW=M == 1,
        num_warps=warps, num_stages=stages)
    return y


def static_launch(M, K, N, group, dt, sms, cfg=None, maxnreg=None):
    """What gemv would launch on a CUDA device with ``sms`` SMs (no tensors), in
    w4a16_v3.static_launch's form, for benchmarks/kernels/sass_stats.py."""
    if cfg:
        CONFIG_OVERRIDE["config"] = cfg
    try:
        bn, bk, splits, warps, stages = config(M, N, K, group, False, sms)
    finally:
        CONFIG_OVERRIDE.clear()
    k_per_split = cdiv(cdiv(K, splits), bk) * bk
    splits = cdiv(K, k_per_split)
    tdt = "fp16" if dt == "fp16" else "bf16"
    args = dict(x_ptr="*" + tdt, qw_ptr="*i32", qz_ptr="*i32", s_ptr="*" + tdt, b_ptr="*" + tdt, y_ptr="*" + tdt,
                part_ptr="*fp32", cnt_ptr="*i32", M=M, N=N, K=K, k_per_split=k_per_split, stride_xm=K,
                stride_qwr=N // 8, stride_qzr=N // 8, stride_sr=N, stride_ym=N)
    consts = dict(DT=tl.float16 if dt == "fp16" else tl.bfloat16, GROUP=0 if group >= K else group, HAS_BIAS=False,
                  SPLIT=splits > 1, EVEN_K=K % bk == 0, EVEN_N=N % bn == 0, ASM=True, BLOCK_M=16, BLOCK_N=bn,
                  BLOCK_K=bk, ONE_ROW=M == 1)
    info = f"BLOCK_N {bn} BLOCK_K {bk} splits {splits} grid {cdiv(N, bn) * splits} stages {stages}"
    return _w4a16_gemv_v4_kernel, args, consts, warps, stages, maxnreg, bn * bk, info
