"""W4A16 AWQ GEMV for decode (M <= 16), v3: v2's formulation (w4a16.py: transposed, four int16
"planes" of biased nibbles into the tensor cores, zero / scale per K tile after the dot, one
launch with a last-program split-K reduction), re-cut from static analysis of v2's sm_90 SASS
(benchmarks/kernels/sass_stats.py).

What the analysis said about v2 (gate_up 4096 -> 28672, M = 1, bf16, BLOCK 256 x 128):
  * 2.4 instructions per weight in the K loop, 168 registers, no spills, 62 KB shared: the
    packed int16 tile goes global -> shared (LDGSTS.128) -> operand registers (LDSM), there is
    no convert_layout in the loop, so no 16-bit weight data round-trips through shared memory.
    At the measured 1.69 TB/s an SM issues ~30 thread-instructions a cycle of its 128: the ALU
    is not the limit;
  * the scale / zero loads of each K tile (five small tt.load) are not pipelined (Triton's
    pipeliner makes async copies only of the dot's operands): every trip waits one full
    global-memory latency before its epilogue, with only 3 programs an SM to hide it;
  * 112 N tiles x 4 splits = 448 programs against 3 x 132 = 396 resident: 1.13 waves, the
    last 52 programs run alone.
v3a keeps the inner loop and fixes those two: the scales / zeros of the next K tile are loaded
one trip ahead (loop-carried registers, so their latency hides behind a whole trip), and the
split count is sized so that the grid is one wave of resident programs (PROGS_PER_SM from the
static register / shared-memory use).  For M == 1 it also sums x over the tile as a 1-D vector
(v2 summed the [BLOCK_K, 16] padded tile: 20 shuffles a trip).

fp16 also makes its four planes in five instructions a register instead of seven (_plane3).

v3c is v3a with the scales and zeros read as contiguous rows (one vector load each instead of
five 16-bit gathers a trip; 4 bytes a thread, carried as loaded) and split into the planes in
the trip that uses them (a small shared-memory convert_layout): 3 LDG a trip instead of 14.

(v3b, a CUDA-core M == 1 formulation, was removed: its successor v5, timed on an H200, lost to
v3a at every shape; docs/quantization.md.)
"""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from .common import cdiv, next_pow2, on_interpreter, sm_count
from .activation import act_mul
from .pdl import launch_options, pdl_enter, prefetch_l2
from .w4a16 import _plane, _split_k_buffers, _v2_out, _v2_reduce

VARIANTS = ("v3a", "v3c")
MAX_M = {"v3a": 16, "v3c": 16}   # the largest M each takes (more: gemv returns None)

# (BLOCK_N, BLOCK_K, num_warps, num_stages[, splits[, maxnreg (0: no cap)]]) forced
# (bench_quant_gemm.py --sweep-v3); splits None: the one-wave rule
CONFIG_OVERRIDE: dict = {}

# resident programs an SM holds at the default config (sm_90 SASS: 168 registers x 128 threads,
# 62 KB shared -> 3); the split count fills exactly one wave of them
PROGS_PER_SM = {"v3a": 3, "v3c": 3}
# register cap that keeps PROGS_PER_SM programs resident (65536 / (3 x 128 threads) -> 168)
MAXNREG = {"v3a": 168, "v3c": 168}
# Fewer than 4 warps a program: Triton makes mma.sync (HMMA) of the dots instead of a warpgroup's
# wgmma, so no trip waits on a wgmma group to drain.  Resident programs an SM of those tiles
# (BLOCK_N, warps), from their sm_90 SASS (sass_stats.py, triton 3.6, no register cap):
# 128 x 128 x 2 warps 187 registers -> 5, 256 x 128 x 2 241 -> 4, 64 x 128 x 2 168 -> 6,
# 64 x 128 x 1 185 -> 10, 128 x 128 x 1 244 -> 8
PROGS_SMALL = {(128, 2): 5, (256, 2): 4, (64, 2): 6, (64, 1): 10, (128, 1): 8}


def resident(variant, bn, warps):
    """Programs of this tile one SM holds (the one-wave split rule sizes the grid by it)."""
    if warps >= 4:
        return max(1, PROGS_PER_SM[variant] * 4 // warps)
    return PROGS_SMALL.get((bn, warps), 12 // warps)


@triton.jit
def _plane3(h, J: tl.constexpr, DT: tl.constexpr, ASM: tl.constexpr):
    """As w4a16._plane (BIAS + nibble J of each int16, by bit pattern), but for fp16 the odd
    planes keep their nibble at bits 4..7, still inside fp16's 10-bit mantissa: 1024 + 16 q,
    no shift; planes 2 and 3 share one shift by 8 (ptxas merges the two identical shr).  So
    five instructions make the four planes of a 32-bit register instead of seven.  bf16 has
    a 7-bit mantissa (bits 4..7 would reach the exponent): w4a16._plane as it is."""
    if DT == tl.float16:
        if ASM:
            if J == 0:
                return tl.inline_asm_elementwise("lop3.b32 $0, $1, 0x000F000F, 0x64006400, 0xea;", "=r,r",
                                                 [h], dtype=tl.float16, is_pure=True, pack=2)
            elif J == 1:
                return tl.inline_asm_elementwise("lop3.b32 $0, $1, 0x00F000F0, 0x64006400, 0xea;", "=r,r",
                                                 [h], dtype=tl.float16, is_pure=True, pack=2)
            elif J == 2:
                return tl.inline_asm_elementwise(
                    "{.reg .b32 t; shr.b32 t, $1, 8; lop3.b32 $0, t, 0x000F000F, 0x64006400, 0xea;}", "=r,r",
                    [h], dtype=tl.float16, is_pure=True, pack=2)
            else:
                return tl.inline_asm_elementwise(
                    "{.reg .b32 t; shr.b32 t, $1, 8; lop3.b32 $0, t, 0x00F000F0, 0x64006400, 0xea;}", "=r,r",
                    [h], dtype=tl.float16, is_pure=True, pack=2)
        else:
            if J % 2 == 0:
                return (((h >> (4 * J)) & 0xF) | 0x6400).to(DT, bitcast=True)
            else:
                return (((h >> (4 * J - 4)) & 0xF0) | 0x6400).to(DT, bitcast=True)
    else:
        return _plane(h, J, DT, ASM)


@triton.jit
def _acc_plane(a, c, p, s, z, xs, J: tl.constexpr, DT: tl.constexpr, ONE_ROW: tl.constexpr):
    """a += s * x.(q - z) from p = x.(BIAS + MUL q) (MUL 16 for _plane3's fp16 odd planes):
    x.(q - z) = (p - (BIAS + MUL z) sum x) / MUL.  ONE_ROW (xs a scalar): the zero term is
    summed per column into c (2 values a thread, not the [rows, 16] padded tile) and taken
    off once after the loop."""
    BIAS: tl.constexpr = 1024.0 if DT == tl.float16 else 128.0
    MUL: tl.constexpr = 16.0 if (DT == tl.float16 and J % 2 == 1) else 1.0
    zb = z.to(tl.float32) * MUL + BIAS
    sf = s.to(tl.float32) * (1.0 / MUL)
    if ONE_ROW:
        a += sf[:, None] * p
        c += sf * zb * xs
    else:
        a += sf[:, None] * (p - zb[:, None] * xs)
    return a, c


@triton.jit
def _scales4(s_ptr, z16, g, stride_sr, stride_qzr, jc, ncol, jmask, EVEN_N: tl.constexpr):
    """Group g's zeros (int16, four nibbles) and the four planes' scales."""
    if EVEN_N:
        zh = tl.load(z16 + g * (2 * stride_qzr) + jc)
        s0 = tl.load(s_ptr + g * stride_sr + ncol)
        s1 = tl.load(s_ptr + g * stride_sr + ncol + 2)
        s2 = tl.load(s_ptr + g * stride_sr + ncol + 4)
        s3 = tl.load(s_ptr + g * stride_sr + ncol + 6)
    else:
        zh = tl.load(z16 + g * (2 * stride_qzr) + jc, mask=jmask, other=0)
        s0 = tl.load(s_ptr + g * stride_sr + ncol, mask=jmask, other=0.0)
        s1 = tl.load(s_ptr + g * stride_sr + ncol + 2, mask=jmask, other=0.0)
        s2 = tl.load(s_ptr + g * stride_sr + ncol + 4, mask=jmask, other=0.0)
        s3 = tl.load(s_ptr + g * stride_sr + ncol + 6, mask=jmask, other=0.0)
    return zh, s0, s1, s2, s3


@triton.jit
def _row_load(s_ptr, g, stride_sr, pid_n, N, BLOCK_N: tl.constexpr, EVEN_N: tl.constexpr):
    """Group g's BLOCK_N scales as one contiguous row: 4 bytes a thread, already packed in
    one register, so that a loop-carried copy needs no repacking (which would read the load's
    register in the trip that issued it)."""
    n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    if EVEN_N:
        return tl.load(s_ptr + g * stride_sr + n)
    else:
        return tl.load(s_ptr + g * stride_sr + n, mask=n < N, other=0.0)


@triton.jit
def _zrow_load(qz_ptr, g, stride_qzr, pid_n, N, BLOCK_N: tl.constexpr, EVEN_N: tl.constexpr):
    """Group g's packed zeros of the tile as int32 words (one register a thread, carried as is)."""
    c = pid_n * (BLOCK_N // 8) + tl.arange(0, BLOCK_N // 8)
    if EVEN_N:
        return tl.load(qz_ptr + g * stride_qzr + c)
    else:
        return tl.load(qz_ptr + g * stride_qzr + c, mask=c < N // 8, other=0)


@triton.jit
def _zrow_int16(zw, BLOCK_N: tl.constexpr):
    """Packed zero words -> the int16 columns jc = 2c + h (h: low / high half) as int32."""
    return tl.reshape(tl.join(zw & 0xFFFF, (zw >> 16) & 0xFFFF), (BLOCK_N // 4,)).to(tl.int16)


@triton.jit
def _row_planes(row, BLOCK_N: tl.constexpr):
    """The row split into the four planes: column 8c + 2j + h is plane j's int16 column 2c + h."""
    r = tl.permute(tl.reshape(row, (BLOCK_N // 8, 2, 2, 2)), (0, 3, 1, 2))   # [c, h, j // 2, j % 2]
    r = tl.reshape(r, (BLOCK_N // 4, 2, 2))                                   # [2c + h, j // 2, j % 2]
    e, o = tl.split(r)
    s0, s2 = tl.split(e)
    s1, s3 = tl.split(o)
    return s0, s1, s2, s3


@triton.jit
def _xh_tile(q16, hoff, xcol, kk, k0, k_hi, stride_qwr, jmask, EVEN_K: tl.constexpr, EVEN_N: tl.constexpr):
    """One trip's x tile [BLOCK_K, BLOCK_M] and packed int16 weight tile [Q, BLOCK_K] (hoff: the
    tile's offsets; only a scalar int64 base moves with k0)."""
    hp = q16 + (tl.full((), 0, tl.int64) + k0) * (2 * stride_qwr) + hoff
    xp = xcol + (k0 + kk)[:, None]
    if EVEN_K:
        xt = tl.load(xp)
        if EVEN_N:
            h = tl.load(hp)
        else:
            h = tl.load(hp, mask=jmask[:, None], other=0)
    else:
        kin = k0 + kk < k_hi
        # rows past k_hi: x = 0, so their (finite) BIAS + 0 weights add nothing
        xt = tl.load(xp, mask=kin[:, None], other=0.0)
        h = tl.load(hp, mask=jmask[:, None] & kin[None, :], other=0)
    return xt, h


@triton.jit
def _x_in(x_ptr, r_ptr, nw_ptr, off, mask, rstd, K, NORM: tl.constexpr, ACT: tl.constexpr):
    """x [off] as the GEMV multiplies it: with NORM, rms_norm(x + r) * nw with the row's rstd, in
    norm.py's arithmetic (x + r rounded to the dtype; the normed value rounded before the weight);
    with ACT >= 0 (activation.KINDS), act(x[off]) * x[K + off] (x: gate_up's [1, 2K] output), in
    activation.act_mul's arithmetic."""
    x = tl.load(x_ptr + off, mask=mask, other=0.0)
    if ACT >= 0:
        x = act_mul(x, tl.load(x_ptr + K + off, mask=mask, other=0.0), ACT).to(x.dtype)
    if NORM:
        h = (x.to(tl.float32) + tl.load(r_ptr + off, mask=mask, other=0.0).to(tl.float32)).to(x.dtype)
        w = tl.load(nw_ptr + off, mask=mask, other=0.0).to(tl.float32)
        x = ((h.to(tl.float32) * rstd).to(x.dtype).to(tl.float32) * w).to(x.dtype)
    return x


@triton.jit
def _w4a16_gemv_v3a_kernel(x_ptr, qw_ptr, qz_ptr, s_ptr, b_ptr, y_ptr, part_ptr, cnt_ptr, M, N, K,
                           k_per_split, stride_xm, stride_qwr, stride_qzr, stride_sr, stride_ym,
                           DT: tl.constexpr, GROUP: tl.constexpr, HAS_BIAS: tl.constexpr, SPLIT: tl.constexpr,
                           EVEN_K: tl.constexpr, EVEN_N: tl.constexpr, ASM: tl.constexpr,
                           BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                           ONE_ROW: tl.constexpr, SROW: tl.constexpr = False, USE_PDL: tl.constexpr = False,
                           PF_ROWS: tl.constexpr = 256, PF_LINES: tl.constexpr = 1,
                           r_ptr=None, nw_ptr=None, so_ptr=None, eps=0.0, NORM: tl.constexpr = False,
                           KROW: tl.constexpr = 16, ACT: tl.constexpr = -1):
    """As w4a16._w4a16_gemv_v2_awq_kernel (int16 column jc of qweight row k: nibble j is output
    column 8 (jc // 2) + 2 j + jc % 2), with the next K tile's scales / zeros prefetched and,
    with ONE_ROW (M == 1), x summed over the tile from a 1-D load.

    USE_PDL (pdl.py): the split's first PF_ROWS weight rows (PF_LINES 128-byte lines each) are
    asked of L2 and its first scales / zeros loaded before the wait for the kernel that
    wrote x; weights are never written, so that is safe.

    NORM (M == 1, core/ops/deferred.py): x is rms_norm(x + r) * nw.  Each program sums the
    squares of the whole row x + r (KROW >= K values, from L2) for its rstd; the programs of N
    tile 0 write x + r (the new residual stream) to so over their K range.  ACT (M == 1): x is
    act(gate) * up of gate_up's output [1, 2K] (deferred.py's GatedInput), computed as it is read."""
    pid_n, pid_s = tl.program_id(0), tl.program_id(1)
    BIAS: tl.constexpr = 1024.0 if DT == tl.float16 else 128.0
    Q: tl.constexpr = BLOCK_N // 4
    m = tl.arange(0, BLOCK_M)
    xcol = x_ptr + tl.minimum(m, M - 1)[None, :].to(tl.int64) * stride_xm
    jc = pid_n * Q + tl.arange(0, Q)
    jmask = jc < N // 4
    ncol = 8 * (jc // 2) + jc % 2
    q16 = qw_ptr.to(tl.pointer_type(tl.int16))
    z16 = qz_ptr.to(tl.pointer_type(tl.int16))
    a0 = tl.zeros((Q, BLOCK_M), dtype=tl.float32)
    a1 = tl.zeros((Q, BLOCK_M), dtype=tl.float32)
    a2 = tl.zeros((Q, BLOCK_M), dtype=tl.float32)
    a3 = tl.zeros((Q, BLOCK_M), dtype=tl.float32)
    c0 = tl.zeros((Q,), dtype=tl.float32)
    c1 = tl.zeros((Q,), dtype=tl.float32)
    c2 = tl.zeros((Q,), dtype=tl.float32)
    c3 = tl.zeros((Q,), dtype=tl.float32)
    k_lo = pid_s * k_per_split
    k_hi = tl.minimum(k_lo + k_per_split, K)
    if USE_PDL:
        pr = tl.minimum(k_lo + tl.arange(0, PF_ROWS), k_hi - 1).to(tl.int64)[:, None]
        pc = tl.minimum(pid_n * Q + tl.arange(0, PF_LINES) * 64, N // 4 - 1)[None, :]
        prefetch_l2(q16 + pr * (2 * stride_qwr) + pc)
    if GROUP == 0:
        g = 0
    else:
        g = k_lo // GROUP
    zh, s0, s1, s2, s3 = _scales4(s_ptr, z16, g, stride_sr, stride_qzr, jc, ncol, jmask, EVEN_N)
    if SROW:
        row = _row_load(s_ptr, g, stride_sr, pid_n, N, BLOCK_N, EVEN_N)
        s0, s1, s2, s3 = _row_planes(row, BLOCK_N)
        zrow = _zrow_load(qz_ptr, g, stride_qzr, pid_n, N, BLOCK_N, EVEN_N)
        zh = _zrow_int16(zrow, BLOCK_N)
    pdl_enter(USE_PDL)   # x (and y, the partials, the counters) only after the previous kernel
    rstd = 1.0
    if NORM:
        kr = tl.arange(0, KROW)
        km = kr < K
        hs = (tl.load(x_ptr + kr, mask=km, other=0.0).to(tl.float32)
              + tl.load(r_ptr + kr, mask=km, other=0.0).to(tl.float32)).to(x_ptr.dtype.element_ty)
        if pid_n == 0:
            tl.store(so_ptr + kr, hs, mask=km & (kr >= k_lo) & (kr < k_hi))
        hf = hs.to(tl.float32)
        rstd = tl.rsqrt(tl.sum(hf * hf, axis=0) / K + eps)
    kk = tl.arange(0, BLOCK_K)
    if ONE_ROW:
        # M == 1: x summed over the tile from a 1-D copy (v2 summed the [BLOCK_K, 16] padded
        # operand: 20 shuffles a trip), also loaded a trip ahead
        xv = _x_in(x_ptr, r_ptr, nw_ptr, k_lo + kk, k_lo + kk < k_hi, rstd, K, NORM, ACT)
    # the tile's int32 offsets are fixed; only a scalar (uniform) base moves with k0
    hoff = kk[None, :] * (2 * stride_qwr) + jc[:, None]
    for k0 in range(k_lo, k_hi, BLOCK_K):
        # next trip's group (this one's on the last trip: an L1 hit, never out of bounds); issued
        # first so that its latency runs under this trip's loads and dots
        if GROUP == 0:
            zn, t0, t1, t2, t3 = zh, s0, s1, s2, s3
        else:
            gn = tl.minimum(k0 + BLOCK_K, k_hi - 1) // GROUP
            zn, t0, t1, t2, t3 = _scales4(s_ptr, z16, gn, stride_sr, stride_qzr, jc, ncol, jmask, EVEN_N)
            if SROW:
                # v3c: the scales travel as the packed row, split into planes in the trip
                # that uses them
                rown = _row_load(s_ptr, gn, stride_sr, pid_n, N, BLOCK_N, EVEN_N)
                s0, s1, s2, s3 = _row_planes(row, BLOCK_N)
                zrown = _zrow_load(qz_ptr, gn, stride_qzr, pid_n, N, BLOCK_N, EVEN_N)
                zh = _zrow_int16(zrow, BLOCK_N)
        if ONE_ROW:
            xs = tl.sum(xv.to(tl.float32), axis=0)
            xcur = xv
            xv = _x_in(x_ptr, r_ptr, nw_ptr, k0 + BLOCK_K + kk, k0 + BLOCK_K + kk < k_hi, rstd, K, NORM, ACT)
        xt, h = _xh_tile(q16, hoff, xcol, kk, k0, k_hi, stride_qwr, jmask, EVEN_K, EVEN_N)
        if NORM or ACT >= 0:
            # the normed / activated row: this trip's 1-D values, broadcast to the dot's padded columns
            xt = tl.broadcast_to(xcur[:, None], (BLOCK_K, BLOCK_M))
        if not ONE_ROW:
            xs = tl.sum(xt.to(tl.float32), axis=0)[None, :]
        a0, c0 = _acc_plane(a0, c0, tl.dot(_plane3(h, 0, DT, ASM), xt), s0, zh & 0xF, xs, 0, DT, ONE_ROW)
        a1, c1 = _acc_plane(a1, c1, tl.dot(_plane3(h, 1, DT, ASM), xt), s1, (zh >> 4) & 0xF, xs, 1, DT, ONE_ROW)
        a2, c2 = _acc_plane(a2, c2, tl.dot(_plane3(h, 2, DT, ASM), xt), s2, (zh >> 8) & 0xF, xs, 2, DT, ONE_ROW)
        a3, c3 = _acc_plane(a3, c3, tl.dot(_plane3(h, 3, DT, ASM), xt), s3, (zh >> 12) & 0xF, xs, 3, DT, ONE_ROW)
        zh, s0, s1, s2, s3 = zn, t0, t1, t2, t3
        if SROW:
            if GROUP != 0:
                row = rown
                zrow = zrown
    if ONE_ROW:
        a0 -= c0[:, None]
        a1 -= c1[:, None]
        a2 -= c2[:, None]
        a3 -= c3[:, None]
    ncol = tl.where(jmask, ncol, N)
    _v2_out(a0, ncol, m, M, N, y_ptr, stride_ym, part_ptr, pid_s, b_ptr, HAS_BIAS, SPLIT)
    _v2_out(a1, ncol + 2, m, M, N, y_ptr, stride_ym, part_ptr, pid_s, b_ptr, HAS_BIAS, SPLIT)
    _v2_out(a2, ncol + 4, m, M, N, y_ptr, stride_ym, part_ptr, pid_s, b_ptr, HAS_BIAS, SPLIT)
    _v2_out(a3, ncol + 6, m, M, N, y_ptr, stride_ym, part_ptr, pid_s, b_ptr, HAS_BIAS, SPLIT)
    if SPLIT:
        _v2_reduce(part_ptr, cnt_ptr, b_ptr, y_ptr, M, N, stride_ym, pid_n, HAS_BIAS, BLOCK_M, BLOCK_N, ONE_ROW)


def config(variant, M, N, K, group, interp, sms):
    """(BLOCK_N, BLOCK_K, splits, num_warps, num_stages), or None when the variant cannot run."""
    ks = (128, 64, 32, 16)
    bk = next((b for b in ks if group % b == 0 or group >= K), None)
    if bk is None or N % 8:
        return None
    if interp:
        bn, bk = 64, min(bk, 64)
        return bn, bk, max(1, min(4, cdiv(K, bk) // 2)), 1, 1
    fit = bk            # the largest K tile inside a group
    bn, warps, stages, splits = 256, 4, 4, None
    if variant == "v3a" and cdiv(N, bn) <= 32:
        # few column tiles (N <= 8192: Llama-3-8B's qkv, o, down), 3 stages, from sweeps on an H200
        # with weights streamed from DRAM (bench_quant_gemm --cold 256 --sweep-v3).  M > 1: 8 splits
        # (16 for K > 8192; 2026-12-02: qkv 12.6 -> 12.2 us, o 10.1 -> 9.8, down 21.2 -> 18.6).  M = 1:
        # about two waves of programs, cheap since the split-K reduction loads many partials at once
        # (qkv 24 tiles -> 11 splits, o 16 -> 16, down 16 -> 16; 2026-12-03: qkv 10.5 -> 10.1 us,
        # o 8.9 -> 8.7, down as before).  Many tiles (gate_up): one wave, 3 stages (28.9 -> 27.3).
        splits = cdiv(2 * sms, cdiv(N, bn)) if M == 1 else (16 if K > 8192 else 8)
        stages = 3
    elif variant == "v3a":
        stages = 3
        if M == 1:
            # gate_up at M = 1: 2-warp programs (mma.sync, no wgmma group drained each trip),
            # 4 an SM, one wave: 27.9 -> 25.2 us (bench_quant_gemm --cold 256 --sweep-v3,
            # 2026-12-03); the few-tile shapes and M = 16 were not faster that way
            warps = 2
    if CONFIG_OVERRIDE:
        cfg = CONFIG_OVERRIDE["config"]
        bn, bk_o, warps, stages = cfg[:4]
        splits = cfg[4] if len(cfg) > 4 else None
        if bk_o in ks and bk_o <= fit and fit % bk_o == 0:
            bk = bk_o
    if splits is not None:
        splits = max(1, min(splits, cdiv(K, bk) // 2, K // (64 * M)))
    else:
        # one wave: tiles x splits <= the resident programs; each split streams >= 2 K tiles;
        # with rows the float32 partials stay within an eighth of the weight bytes (as v2)
        slots = resident(variant, bn, warps) * sms
        splits = max(1, min(slots // cdiv(N, bn), cdiv(K, bk) // 2, K // (64 * M), 32))
    return bn, bk, splits, warps, stages


# K trips of weights a split asks of L2 before its wait (PDL only; bench_quant_gemm --pdl sweeps it)
PF_TRIPS = int(os.environ.get("HALINFER_PDL_PREFETCH_TRIPS", "2"))


def pdl_consts(bn, bk, k_per_split):
    """The v3a kernel's PDL constexprs: its prefetch covers PF_TRIPS K tiles of the split
    (a power of two of rows, at most the split) and each row's bn / 2 bytes in 128-byte lines."""
    rows = min(PF_TRIPS * bk, k_per_split)
    return dict(PF_ROWS=1 << (max(1, rows).bit_length() - 1), PF_LINES=max(1, bn // 256))


def maxnreg(variant, warps):
    """The register cap the launch asks for (None: ptxas's choice; MAXNREG is for 4-warp tiles)."""
    cfg = CONFIG_OVERRIDE.get("config", ())
    if len(cfg) > 5:
        return cfg[5] or None
    return MAXNREG.get(variant) if warps == 4 else None


def _args(variant, M, N, K, group, bk, bn, splits, dt_is_fp16):
    k_per_split = cdiv(cdiv(K, splits), bk) * bk
    splits = cdiv(K, k_per_split)
    consts = dict(DT=tl.float16 if dt_is_fp16 else tl.bfloat16, GROUP=0 if group >= K else group,
                  SPLIT=splits > 1, EVEN_K=K % bk == 0, EVEN_N=N % bn == 0, BLOCK_M=16, BLOCK_N=bn, BLOCK_K=bk,
                  ONE_ROW=M == 1)
    consts["SROW"] = variant == "v3c"
    return k_per_split, splits, consts


KERNELS = {"v3a": _w4a16_gemv_v3a_kernel, "v3c": _w4a16_gemv_v3a_kernel}


def gemv(variant, x, qweight, qzeros, scales, group, bias, N, norm=None, act=None):
    """AWQ 4-bit, fp16 / bf16 x, M <= 16, the w4a16_linear contract: y [M, N] in x's dtype
    (None: no tile fits this group; the caller falls back).  norm (v3a / v3c, M == 1):
    (residual, weight, stream, eps): x is rms_norm(x + residual) * weight, and x + residual
    goes to stream (w4a16_linear_normed).  act (same variants, M == 1): an activation.KINDS
    value; x is gate_up's output [1, 2K] and the GEMV multiplies act(gate) * up
    (w4a16_linear_gated)."""
    interp = on_interpreter(x)
    M, K = x.shape
    if act is not None:
        K //= 2
    cfg = config(variant, M, N, K, group, interp, sm_count(x.device))
    if cfg is None or M > 16 or x.dtype not in (torch.float16, torch.bfloat16):
        return None
    if (norm is not None or act is not None) and M != 1:
        return None
    bn, bk, splits, warps, stages = cfg
    k_per_split, splits, tiles, cnt, y, part = _split_k_buffers(x[:, :K], N, bn, bk, splits)   # (K: act's half)
    consts = _args(variant, M, N, K, group, bk, bn, splits, x.dtype == torch.float16)[2]
    consts["SPLIT"] = splits > 1
    pdl = launch_options(x)
    nreg = None if interp else maxnreg(variant, warps)
    if pdl:
        consts.update(pdl_consts(bn, bk, k_per_split))
    if norm is not None:
        r, nw, so, eps = norm
        consts.update(r_ptr=r, nw_ptr=nw, so_ptr=so, eps=float(eps), NORM=True, KROW=next_pow2(K))
    if act is not None:
        consts["ACT"] = act
    KERNELS[variant][(tiles, splits)](
        x, qweight, qzeros, scales, y if bias is None else bias, y, part, y if cnt is None else cnt,
        M, N, K, k_per_split, x.stride(0), qweight.stride(0), qzeros.stride(0), scales.stride(0), y.stride(0),
        HAS_BIAS=bias is not None, ASM=not interp and torch.version.hip is None, **consts,
        num_warps=warps, num_stages=stages, **pdl,
        **({} if nreg is None else {"maxnreg": nreg}))
    return y


def static_launch(variant, M, K, N, group, dt, sms, cfg=None):
    """What gemv would launch on a CUDA device with ``sms`` SMs (no tensors): for sass_stats.py.
    Returns (kernel, args, constexprs, warps, stages, maxnreg, weights per K trip, description)."""
    if cfg:
        CONFIG_OVERRIDE["config"] = cfg
    try:
        bn, bk, splits, warps, stages = config(variant, M, N, K, group, False, sms)
        nreg = maxnreg(variant, warps)
    finally:
        CONFIG_OVERRIDE.clear()
    k_per_split, splits, consts = _args(variant, M, N, K, group, bk, bn, splits, dt == "fp16")
    tdt = "fp16" if dt == "fp16" else "bf16"
    args = dict(x_ptr="*" + tdt, qw_ptr="*i32", qz_ptr="*i32", s_ptr="*" + tdt, b_ptr="*" + tdt, y_ptr="*" + tdt,
                part_ptr="*fp32", cnt_ptr="*i32", M=M, N=N, K=K, k_per_split=k_per_split, stride_xm=K,
                stride_qwr=N // 8, stride_qzr=N // 8, stride_sr=N, stride_ym=N)
    consts.update(HAS_BIAS=False, ASM=True)
    info = (f"BLOCK_N {bn} BLOCK_K {bk} splits {splits} grid {cdiv(N, bn) * splits} stages {stages} "
            f"({sms * resident(variant, bn, warps)} resident slots assumed)")
    return KERNELS[variant], args, consts, warps, stages, nreg, bn * bk, info
