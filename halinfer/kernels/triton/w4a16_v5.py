"""W4A16 AWQ GEMV for M == 1 on the CUDA cores, v5: vector loads, lanes along K, no tensor cores.

Why: v3a (w4a16_v3.py, tensor cores) issues ~2 instructions a weight but is latency-bound
(each nibble plane's wgmma waited on, 168 registers, 1-3 warps a scheduler; Nsight Compute,
docs/quantization.md): gate_up runs at ~2.3 TB/s, the small GEMVs at 1-1.3.  At M = 1 the
multiply-adds fit on the CUDA cores: per weight one shift, one LOP3 (the nibble ORed into the
float32 1.0 by bit pattern, mask and OR in one instruction because the 1.0's bits come in a
register, ``one``) and one FFMA, about 3 instructions, ~12 us of issue for gate_up against
~15 us of DRAM time.  No operand goes through shared memory, there is no wait on a matrix unit
and no M padding, so a thread holds few live registers and an SM many warps.

Layout of a program: an N tile of 8 W output columns (W packed AWQ words a row, 4 a thread:
one 16-byte load a row) and KP lanes along K; lane l of a trip walks rows k0 + l RG .. + RG - 1
(RG divides the group, so a lane's rows share one scale / zero row), RU rows unrolled a step.
Per lane and nibble position i (output column 8c + AWQ order[i]) acc_i += x_k (1 + q / 16); the
group's epilogue turns that into s (16 acc - (16 + z) sum x).  The lanes are summed once at the
end, and splits of K (other programs) meet in w4a16's last-program reduction, as in v2 / v3a.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .common import cdiv, on_interpreter, sm_count
from .w4a16 import _split_k_buffers, _v2_out, _v2_reduce
from .w4a16_v3 import _plane3

# (BLOCK_N, RG, num_warps, KP, splits, RU) forced by benchmarks (bench_quant_gemm --sweep-v3)
CONFIG_OVERRIDE: dict = {}


@triton.jit
def _epi(y, acc, xs, s_ptr, srow, zh, n, cm, J: tl.constexpr):
    """y += s x.(q - z) for plane J (columns n) from acc = x.(1024 + MUL q) (_plane3's fp16
    bias, MUL 16 on its odd planes): x.(q - z) = (acc - (1024 + MUL z) sum x) / MUL."""
    MUL: tl.constexpr = 16.0 if J % 2 == 1 else 1.0
    sc = tl.load(s_ptr + srow[:, None] + n[None, :], mask=cm, other=0.0).to(tl.float32) * (1.0 / MUL)
    zq = ((zh >> (4 * J)) & 0xF).to(tl.float32)
    return y + sc * (acc - (1024.0 + MUL * zq) * xs)


@triton.jit
def _w4a16_gemv_v5_kernel(x_ptr, qw_ptr, qz_ptr, s_ptr, b_ptr, y_ptr, part_ptr, cnt_ptr, N, K, k_per_split,
                          stride_qwr, stride_qzr, stride_sr,
                          GROUP: tl.constexpr, HAS_BIAS: tl.constexpr, SPLIT: tl.constexpr,
                          EVEN_N: tl.constexpr, ASM: tl.constexpr, W: tl.constexpr, KP: tl.constexpr,
                          RG: tl.constexpr, RU: tl.constexpr):
    """qweight read as int16 (v3a's planes: int16 column jc of a row holds nibbles j = 0..3 of
    output columns 8 (jc // 2) + 2 j + jc % 2); W packed words = 2 W int16 columns a tile row."""
    pid_n, pid_s = tl.program_id(0), tl.program_id(1)
    Q: tl.constexpr = 2 * W
    jc = pid_n * Q + tl.arange(0, Q)
    jmask = jc < N // 4
    cm = jmask[None, :] & (tl.arange(0, KP) >= 0)[:, None]    # [KP, Q]
    ncol = 8 * (jc // 2) + jc % 2
    q16 = qw_ptr.to(tl.pointer_type(tl.int16))
    z16 = qz_ptr.to(tl.pointer_type(tl.int16))
    lane = tl.arange(0, KP)
    k_lo = pid_s * k_per_split
    k_hi = tl.minimum(k_lo + k_per_split, K)
    y0 = tl.zeros((KP, Q), dtype=tl.float32)
    y1 = tl.zeros((KP, Q), dtype=tl.float32)
    y2 = tl.zeros((KP, Q), dtype=tl.float32)
    y3 = tl.zeros((KP, Q), dtype=tl.float32)
    # the launcher makes K and k_per_split multiples of KP * RG: every trip is whole
    for k0 in range(k_lo, k_hi, KP * RG):
        rows = k0 + lane * RG
        wp = q16 + rows.to(tl.int64)[:, None] * (2 * stride_qwr) + jc[None, :]
        xp = x_ptr + rows[:, None]    # [KP, 1]: x in the weights' layout (a 1-D load would be
                                      # converted through shared memory every row)
        a0 = tl.zeros((KP, Q), dtype=tl.float32)
        a1 = tl.zeros((KP, Q), dtype=tl.float32)
        a2 = tl.zeros((KP, Q), dtype=tl.float32)
        a3 = tl.zeros((KP, Q), dtype=tl.float32)
        xs = tl.zeros((KP, 1), dtype=tl.float32)
        for r0 in range(0, RG, RU):
            for r in tl.static_range(RU):
                xr = tl.load(xp + (r0 + r)).to(tl.float32)
                if EVEN_N:
                    h = tl.load(wp + (r0 + r) * (2 * stride_qwr))
                else:
                    h = tl.load(wp + (r0 + r) * (2 * stride_qwr), mask=cm, other=0)
                xs += xr
                # each nibble becomes fp16 1024 + MUL q by bit pattern, two to a LOP3 (_plane3),
                # then float32 by one conversion (an FMA-pipe instruction) for the FFMA
                a0 += xr * _plane3(h, 0, tl.float16, ASM).to(tl.float32)
                a1 += xr * _plane3(h, 1, tl.float16, ASM).to(tl.float32)
                a2 += xr * _plane3(h, 2, tl.float16, ASM).to(tl.float32)
                a3 += xr * _plane3(h, 3, tl.float16, ASM).to(tl.float32)
        if GROUP == 0:
            g = rows * 0
        else:
            g = rows // GROUP
        zh = tl.load(z16 + g.to(tl.int64)[:, None] * (2 * stride_qzr) + jc[None, :], mask=cm, other=0).to(tl.int32)
        srow = g.to(tl.int64) * stride_sr
        y0 = _epi(y0, a0, xs, s_ptr, srow, zh, ncol + 0, cm, 0)
        y1 = _epi(y1, a1, xs, s_ptr, srow, zh, ncol + 2, cm, 1)
        y2 = _epi(y2, a2, xs, s_ptr, srow, zh, ncol + 4, cm, 2)
        y3 = _epi(y3, a3, xs, s_ptr, srow, zh, ncol + 6, cm, 3)
    m = tl.arange(0, 1)
    ncol = tl.where(jmask, ncol, N)
    _v2_out(tl.sum(y0, axis=0)[:, None], ncol + 0, m, 1, N, y_ptr, 0, part_ptr, pid_s, b_ptr, HAS_BIAS, SPLIT)
    _v2_out(tl.sum(y1, axis=0)[:, None], ncol + 2, m, 1, N, y_ptr, 0, part_ptr, pid_s, b_ptr, HAS_BIAS, SPLIT)
    _v2_out(tl.sum(y2, axis=0)[:, None], ncol + 4, m, 1, N, y_ptr, 0, part_ptr, pid_s, b_ptr, HAS_BIAS, SPLIT)
    _v2_out(tl.sum(y3, axis=0)[:, None], ncol + 6, m, 1, N, y_ptr, 0, part_ptr, pid_s, b_ptr, HAS_BIAS, SPLIT)
    if SPLIT:
        _v2_reduce(part_ptr, cnt_ptr, b_ptr, y_ptr, 1, N, 0, pid_n, HAS_BIAS, 1, 8 * W, True)


def config(M, N, K, group, interp, sms):
    """(BLOCK_N, RG, warps, KP, splits, RU), or None when v5 cannot take the shape (M > 1, N not
    in whole packed words, or K not in whole trips of lanes)."""
    if M != 1 or N % 8:
        return None
    g = K if group >= K else group
    rg = next((r for r in (128, 64, 32, 16, 8) if g % r == 0), None)
    if rg is None:
        return None
    if interp:
        bn, warps, kp, ru, splits = 64, 1, 2, 4, 2
    else:
        # 1,024 columns and 4 lanes (one a warp, 4 words a thread); the lane rows as long as leaves
        # at least two programs an SM (a program is 4,096 x RG weights)
        bn, warps, kp, ru, splits = 1024, 4, 4, 8, None
        rg = next((r for r in (128, 64, 32, 16, 8) if r <= rg and g % r == 0
                   and (N * K) // (4096 * r) >= 2 * sms), 8 if g % 8 == 0 else rg)
    if CONFIG_OVERRIDE:
        bn, rg_o, warps, kp, splits, ru = CONFIG_OVERRIDE["config"]
        splits = splits or None
        if g % rg_o == 0:
            rg = rg_o
    ru = min(ru, rg)
    trip = kp * rg
    if K % trip:
        rg = next((r for r in (64, 32, 16, 8) if r < rg and g % r == 0 and K % (kp * r) == 0), None)
        if rg is None:
            return None
        ru, trip = min(ru, rg), kp * rg
    trips = K // trip
    if splits is None:
        # about four resident programs' worth of warps an SM, each split at least one trip
        splits = max(1, min(trips, cdiv(4 * sms * 4 // warps, cdiv(N, bn)), 64))
    return bn, rg, warps, kp, max(1, min(splits, trips)), ru


def gemv(x, qweight, qzeros, scales, group, bias, N):
    """AWQ 4-bit, fp16 / bf16 x, M == 1, the w4a16_linear contract: y [1, N] in x's dtype
    (None: the shape does not fit; the caller falls back)."""
    interp = on_interpreter(x)
    M, K = x.shape
    cfg = config(M, N, K, group, interp, sm_count(x.device))
    if cfg is None or x.dtype not in (torch.float16, torch.bfloat16) or x.stride(1) != 1:
        return None
    bn, rg, warps, kp, splits, ru = cfg
    # k_per_split in whole trips (K is); one split inside a graph capture without counters
    k_per_split, splits, tiles, cnt, y, part = _split_k_buffers(x, N, bn, kp * rg, splits)
    _w4a16_gemv_v5_kernel[(tiles, splits)](
        x, qweight, qzeros, scales, y if bias is None else bias, y, part, y if cnt is None else cnt,
        N, K, k_per_split, qweight.stride(0), qzeros.stride(0), scales.stride(0),
        GROUP=0 if group >= K else group, HAS_BIAS=bias is not None, SPLIT=splits > 1, EVEN_N=N % bn == 0,
        ASM=not interp and torch.version.hip is None,
        W=bn // 8, KP=kp, RG=rg, RU=ru, num_warps=warps, num_stages=1)
    return y


def static_launch(M, K, N, group, dt, sms, cfg=None):
    """What gemv would launch on a CUDA device with ``sms`` SMs (no tensors), in
    w4a16_v3.static_launch's form, for benchmarks/kernels/sass_stats.py."""
    if cfg:
        CONFIG_OVERRIDE["config"] = cfg
    try:
        bn, rg, warps, kp, splits, ru = config(M, N, K, group, False, sms)
    finally:
        CONFIG_OVERRIDE.clear()
    trip = kp * rg
    k_per_split = cdiv(cdiv(K, splits), trip) * trip
    splits = cdiv(K, k_per_split)
    tdt = "fp16" if dt == "fp16" else "bf16"
    args = dict(x_ptr="*" + tdt, qw_ptr="*i32", qz_ptr="*i32", s_ptr="*" + tdt, b_ptr="*" + tdt, y_ptr="*" + tdt,
                part_ptr="*fp32", cnt_ptr="*i32", N=N, K=K, k_per_split=k_per_split, stride_qwr=N // 8,
                stride_qzr=N // 8, stride_sr=N)
    consts = dict(GROUP=0 if group >= K else group, HAS_BIAS=False, SPLIT=splits > 1, EVEN_N=N % bn == 0, ASM=True,
                  W=bn // 8, KP=kp, RG=rg, RU=ru)
    info = f"BLOCK_N {bn} RG {rg} KP {kp} RU {ru} splits {splits} grid {cdiv(N, bn) * splits}"
    return _w4a16_gemv_v5_kernel, args, consts, warps, 1, None, bn * kp * ru, info   # weights a step of RU rows
