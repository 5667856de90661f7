"""W4A16 / W8A16 GEMM with the weights dequantized inside the kernel: AWQ (GEMM packing)
and GPTQ (packed along K, true zeros, g_idx) layouts, the contracts of core/ops/quant.py
and core/ops/gptq.py.

M <= 16 (decode) is memory-bound and runs a GEMV kernel.  GEMV_IMPL "v2" (4-bit, plain
groups, fp16/bf16 activations; "v3a", the default, is v2 with prefetched scales: w4a16_v3.py) is built so that the int4 stream, not the ALU,
is the limit (v1 streamed 0.64 TB/s on an H200: per weight a shift, mask, int->float
conversion at 1/8 rate, zero subtraction, scale, bf16 round trip and FMA):
  * no int->float conversion: a nibble ORed into the mantissa of a 16-bit float MAGIC
    (fp16 0x6400 = 1024, bf16 0x4300 = 128) reads BIAS + q exactly; on the GPU one shift
    and one LOP3 make two of them per 32-bit register (inline PTX; plain Triton in the
    interpreter, three instructions a lane);
  * the tensor cores multiply and add: per K tile (inside one group) part = x . (BIAS + q)
    in float32, then acc += s * (part - (BIAS + z) * sum_k x), which is s * x . (q - z);
    the products are exact, so only float32 accumulation rounds;
  * no 16-bit weight tile through shared memory: the packed weights are read as int16
    (four nibbles), each nibble position j is one "plane" that is a dot operand of its own
    (AWQ: a set of BLOCK_N / 4 output columns; GPTQ: the K rows k0 + j, k0 + j + 4, ...),
    so the chain load -> shift/mask -> bitcast -> dot is elementwise and Triton keeps the
    int16 tile in the operand's registers (async copy to shared memory, one load into the
    registers, then the wgmma); transposed (W^T x^T) so that the weight is operand A;
  * one launch per linear: split-K programs store float32 partials and bump a per-N-tile
    counter; the last to arrive sums the partials in split order (deterministic), adds the
    bias, writes y in x's dtype and zeroes the counter (a cached buffer per device: no
    allocation or host sync, so CUDA-graph safe).
GEMV_IMPL "v1" (and v2's exclusions: act-order, 8-bit, float32, groups no K tile fits)
runs the older kernel: each program owns BLOCK_N output columns and a slice of K, unpacks
in registers and multiplies in float32 on the CUDA cores (M == 1) or one tl.dot (2..16);
partial sums go to a float32 buffer that one torch sum reduces.  GPTQ with act-order g_idx
(groups not contiguous in K) gathers its scales per row.
A loaded model's 4-bit GPTQ never reaches the GPTQ kernels: gptq_prepare (Ops.prepare_gptq,
once at load) re-lays it into AWQ's layout, act-order rows sorted by g_idx (x gathered by that
permutation per call), so its GEMV is AWQ's v2 with four times deeper dots; the GPTQ paths
serve 8-bit, groups of unequal sizes and raw checkpoint tensors (kernel tests, benchmarks).
M up to DEQUANT_MIN_M runs the tiled kernel below (split-K up to M = 64); from there on
(prefill) the weight is dequantized to the activations' dtype by one kernel pass and the
GEMM is torch's (cuBLAS): at that M the GEMM's compute outweighs the extra weight pass.
"""
import os
import weakref

import torch
import triton
import triton.language as tl

from halinfer.core.ops.gptq import gptq_unpack_cols
from halinfer.core.ops.quant import awq_pack

from .common import cdiv, dot_precision, on_interpreter, sm_count, zeroed_counters


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
def _plane(h, J: tl.constexpr, DT: tl.constexpr, ASM: tl.constexpr):
    """int16 [R, C] holding four nibbles each -> DT: BIAS + nibble J, no int->float conversion.
    The nibble ORed into the mantissa of MAGIC (fp16 0x6400 = 1024, bf16 0x4300 = 128; one
    ulp there is 1) and the 16 bits reinterpreted.  ASM (compiled only): the same per 16-bit
    lane, two lanes per 32-bit register in one shift and one LOP3 (the register-packed pair
    is what the tensor-core operand wants); plain Triton makes a shift, a LOP3 and a PRMT of
    each lane."""
    if ASM:
        # (v >> 4J) & 0x000F000F | MAGIC2: lane-independent (bits shifted across the lanes'
        # border are masked off), so it is exact whatever pair of elements shares a register
        if DT == tl.float16:
            if J == 0:
                return tl.inline_asm_elementwise("lop3.b32 $0, $1, 0x000F000F, 0x64006400, 0xea;", "=r,r",
                                                 [h], dtype=tl.float16, is_pure=True, pack=2)
            elif J == 1:
                return tl.inline_asm_elementwise(
                    "{.reg .b32 t; shr.b32 t, $1, 4; lop3.b32 $0, t, 0x000F000F, 0x64006400, 0xea;}", "=r,r",
                    [h], dtype=tl.float16, is_pure=True, pack=2)
            elif J == 2:
                return tl.inline_asm_elementwise(
                    "{.reg .b32 t; shr.b32 t, $1, 8; lop3.b32 $0, t, 0x000F000F, 0x64006400, 0xea;}", "=r,r",
                    [h], dtype=tl.float16, is_pure=True, pack=2)
            else:
                return tl.inline_asm_elementwise(
                    "{.reg .b32 t; shr.b32 t, $1, 12; lop3.b32 $0, t, 0x000F000F, 0x64006400, 0xea;}", "=r,r",
                    [h], dtype=tl.float16, is_pure=True, pack=2)
        else:
            if J == 0:
                return tl.inline_asm_elementwise("lop3.b32 $0, $1, 0x000F000F, 0x43004300, 0xea;", "=r,r",
                                                 [h], dtype=tl.bfloat16, is_pure=True, pack=2)
            elif J == 1:
                return tl.inline_asm_elementwise(
                    "{.reg .b32 t; shr.b32 t, $1, 4; lop3.b32 $0, t, 0x000F000F, 0x43004300, 0xea;}", "=r,r",
                    [h], dtype=tl.bfloat16, is_pure=True, pack=2)
            elif J == 2:
                return tl.inline_asm_elementwise(
                    "{.reg .b32 t; shr.b32 t, $1, 8; lop3.b32 $0, t, 0x000F000F, 0x43004300, 0xea;}", "=r,r",
                    [h], dtype=tl.bfloat16, is_pure=True, pack=2)
            else:
                return tl.inline_asm_elementwise(
                    "{.reg .b32 t; shr.b32 t, $1, 12; lop3.b32 $0, t, 0x000F000F, 0x43004300, 0xea;}", "=r,r",
                    [h], dtype=tl.bfloat16, is_pure=True, pack=2)
    else:
        if DT == tl.float16:
            return (((h >> (4 * J)) & 0xF) | 0x6400).to(DT, bitcast=True)
        else:
            return (((h >> (4 * J)) & 0xF) | 0x4300).to(DT, bitcast=True)


@triton.jit
def _v2_out(acc_t, n, m, M, N, y_ptr, stride_ym, part_ptr, pid_s, b_ptr, HAS_BIAS: tl.constexpr,
            SPLIT: tl.constexpr):
    """acc_t [R, BLOCK_M] (output columns n, rows m) to y, or with SPLIT to this split's float32
    partial [M, N] slice."""
    mask = (n < N)[:, None] & (m < M)[None, :]
    if SPLIT:
        tl.store(part_ptr + pid_s * M * N + m[None, :] * N + n[:, None], acc_t, mask=mask)
    else:
        if HAS_BIAS:
            acc_t += tl.load(b_ptr + n, mask=n < N, other=0.0).to(tl.float32)[:, None]
        tl.store(y_ptr + m[None, :].to(tl.int64) * stride_ym + n[:, None], acc_t.to(y_ptr.dtype.element_ty),
                 mask=mask)


@triton.jit
def _v2_reduce(part_ptr, cnt_ptr, b_ptr, y_ptr, M, N, stride_ym, pid_n, HAS_BIAS: tl.constexpr,
               BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, ONE_ROW: tl.constexpr = False):
    """After this program stored its partial: the last split of N tile pid_n to get here sums
    all partials (a fixed order: deterministic), adds the bias, writes y and re-arms the
    tile's counter (0) for the next launch.  The partials are loaded many splits at once (ONE_ROW,
    M == 1: a [16 splits, BLOCK_N] tile; otherwise two splits a trip): one split a trip, as this
    was, waited a whole L2 latency per split (sm_90 SASS: two LDG.128, then their FADDs), a
    serial tail of 16 latencies on down_proj's 16 splits."""
    tl.debug_barrier()      # every thread's partial stores precede the release below
    seen = tl.atomic_add(cnt_ptr + pid_n, 1, sem="acq_rel", scope="gpu")
    ns = tl.num_programs(1)
    if seen == ns - 1:
        tl.debug_barrier()  # ... and the acquire precedes every thread's loads
        n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        if ONE_ROW:
            U: tl.constexpr = 16
            u = tl.arange(0, U)
            acc1 = tl.zeros((BLOCK_N,), dtype=tl.float32)
            for s0 in range(0, ns, U):
                # .cg: from L2, where the other programs' stores are (not a stale L1 line)
                pm = ((s0 + u) < ns)[:, None] & (n < N)[None, :]
                acc1 += tl.sum(tl.load(part_ptr + (s0 + u)[:, None] * N + n[None, :], mask=pm, other=0.0,
                                       cache_modifier=".cg"), axis=0)
            if HAS_BIAS:
                acc1 += tl.load(b_ptr + n, mask=n < N, other=0.0).to(tl.float32)
            tl.store(y_ptr + n, acc1.to(y_ptr.dtype.element_ty), mask=n < N)
        else:
            m = tl.arange(0, BLOCK_M)
            mask = (m < M)[:, None] & (n < N)[None, :]
            off = m[:, None] * N + n[None, :]
            acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
            for s in range(0, ns, 2):
                p0 = tl.load(part_ptr + s * M * N + off, mask=mask, other=0.0, cache_modifier=".cg")
                # (a tensor mask: the interpreter refuses a scalar one combined in)
                p1 = tl.load(part_ptr + (s + 1) * M * N + off, mask=mask & ((m * 0 + s + 1) < ns)[:, None],
                             other=0.0, cache_modifier=".cg")
                acc += p0 + p1
            if HAS_BIAS:
                acc += tl.load(b_ptr + n, mask=n < N, other=0.0).to(tl.float32)[None, :]
            tl.store(y_ptr + m[:, None].to(tl.int64) * stride_ym + n[None, :], acc.to(y_ptr.dtype.element_ty),
                     mask=mask)
        tl.store(cnt_ptr + pid_n, 0)


@triton.jit
def _w4a16_gemv_v2_awq_kernel(x_ptr, qw_ptr, qz_ptr, s_ptr, b_ptr, y_ptr, part_ptr, cnt_ptr, M, N, K,
                              k_per_split, stride_xm, stride_qwr, stride_qzr, stride_sr, stride_ym,
                              DT: tl.constexpr, GROUP: tl.constexpr, HAS_BIAS: tl.constexpr, SPLIT: tl.constexpr,
                              EVEN_K: tl.constexpr, EVEN_N: tl.constexpr, ASM: tl.constexpr,
                              BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """AWQ, transposed: y^T tile [BLOCK_N, BLOCK_M] = W^T x^T.  qweight read as int16: int16
    column jc = 2c + h of row k holds nibbles 4h .. 4h + 3 of packed column c, which AWQ's
    order 0,2,4,6,1,3,5,7 makes output columns 8c + 2j + h (j = 0..3).  So nibble j of the
    [BLOCK_N / 4, BLOCK_K] int16 tile is a plane of BLOCK_N / 4 output columns, one dot each;
    the tile goes global -> shared (async copy) -> the dot operand's registers, unpacked there
    (no 16-bit weight tile through shared memory)."""
    pid_n, pid_s = tl.program_id(0), tl.program_id(1)
    BIAS: tl.constexpr = 1024.0 if DT == tl.float16 else 128.0
    Q: tl.constexpr = BLOCK_N // 4
    m = tl.arange(0, BLOCK_M)
    # rows past M read row M - 1 again (finite, never stored): no mask on the x loads
    xcol = x_ptr + tl.minimum(m, M - 1)[None, :].to(tl.int64) * stride_xm
    jc = pid_n * Q + tl.arange(0, Q)                       # int16 columns of qweight / qzeros
    jmask = jc < N // 4
    # output column of plane j: 8 (jc // 2) + 2 j + jc % 2
    ncol = 8 * (jc // 2) + jc % 2
    q16 = qw_ptr.to(tl.pointer_type(tl.int16))
    z16 = qz_ptr.to(tl.pointer_type(tl.int16))
    a0 = tl.zeros((Q, BLOCK_M), dtype=tl.float32)
    a1 = tl.zeros((Q, BLOCK_M), dtype=tl.float32)
    a2 = tl.zeros((Q, BLOCK_M), dtype=tl.float32)
    a3 = tl.zeros((Q, BLOCK_M), dtype=tl.float32)
    k_lo = pid_s * k_per_split
    k_hi = tl.minimum(k_lo + k_per_split, K)
    for k0 in range(k_lo, k_hi, BLOCK_K):
        k = k0 + tl.arange(0, BLOCK_K)
        hp = q16 + k[None, :].to(tl.int64) * (2 * stride_qwr) + jc[:, None]
        # EVEN_K / EVEN_N: every tile is whole (k_per_split is a multiple of BLOCK_K): no masks
        if EVEN_K:
            xt = tl.load(xcol + k[:, None])
            if EVEN_N:
                h = tl.load(hp)
            else:
                h = tl.load(hp, mask=jmask[:, None], other=0)
        else:
            # rows past k_hi: x = 0, so their (finite) BIAS + 0 weights add nothing
            xt = tl.load(xcol + k[:, None], mask=(k < k_hi)[:, None], other=0.0)
            h = tl.load(hp, mask=jmask[:, None] & (k < k_hi)[None, :], other=0)
        xs = tl.sum(xt.to(tl.float32), axis=0)[None, :]     # [1, BLOCK_M]: sum of x over the tile
        if GROUP == 0:          # one group spans K
            g = 0
        else:
            g = k0 // GROUP     # int32: scale / zero offsets are tiny
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
        # per plane: acc += s * (x.(BIAS + q) - (BIAS + z) * sum x) = s * x.(q - z)
        p = tl.dot(_plane(h, 0, DT, ASM), xt)
        a0 += s0.to(tl.float32)[:, None] * (p - ((zh & 0xF).to(tl.float32) + BIAS)[:, None] * xs)
        p = tl.dot(_plane(h, 1, DT, ASM), xt)
        a1 += s1.to(tl.float32)[:, None] * (p - (((zh >> 4) & 0xF).to(tl.float32) + BIAS)[:, None] * xs)
        p = tl.dot(_plane(h, 2, DT, ASM), xt)
        a2 += s2.to(tl.float32)[:, None] * (p - (((zh >> 8) & 0xF).to(tl.float32) + BIAS)[:, None] * xs)
        p = tl.dot(_plane(h, 3, DT, ASM), xt)
        a3 += s3.to(tl.float32)[:, None] * (p - (((zh >> 12) & 0xF).to(tl.float32) + BIAS)[:, None] * xs)
    ncol = tl.where(jmask, ncol, N)       # columns of a partial last tile: masked off
    _v2_out(a0, ncol, m, M, N, y_ptr, stride_ym, part_ptr, pid_s, b_ptr, HAS_BIAS, SPLIT)
    _v2_out(a1, ncol + 2, m, M, N, y_ptr, stride_ym, part_ptr, pid_s, b_ptr, HAS_BIAS, SPLIT)
    _v2_out(a2, ncol + 4, m, M, N, y_ptr, stride_ym, part_ptr, pid_s, b_ptr, HAS_BIAS, SPLIT)
    _v2_out(a3, ncol + 6, m, M, N, y_ptr, stride_ym, part_ptr, pid_s, b_ptr, HAS_BIAS, SPLIT)
    if SPLIT:
        _v2_reduce(part_ptr, cnt_ptr, b_ptr, y_ptr, M, N, stride_ym, pid_n, HAS_BIAS, BLOCK_M, BLOCK_N)


@triton.jit
def _w4a16_gemv_v2_gptq_kernel(x_ptr, qw_ptr, qz_ptr, s_ptr, b_ptr, y_ptr, part_ptr, cnt_ptr, M, N, K,
                               k_per_split, stride_xm, stride_qwr, stride_qzr, stride_sr, stride_ym,
                               DT: tl.constexpr, GROUP: tl.constexpr, HAS_BIAS: tl.constexpr,
                               SPLIT: tl.constexpr, EVEN_K: tl.constexpr, EVEN_N: tl.constexpr,
                               ASM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                               BLOCK_K: tl.constexpr):
    """GPTQ (packed along K, plain groups), transposed as the AWQ kernel.  Read as int16, word
    (r, n) is two int16 of K rows 8r .. 8r + 3 and 8r + 4 .. 8r + 7: int16 t of a tile holds
    rows k0 + 4t + j in nibble j, so nibble j of the [BLOCK_N, BLOCK_K / 4] int16 tile times
    x's columns k0 + j, k0 + j + 4, ... is one dot (four per tile, one accumulator)."""
    pid_n, pid_s = tl.program_id(0), tl.program_id(1)
    BIAS: tl.constexpr = 1024.0 if DT == tl.float16 else 128.0
    T: tl.constexpr = BLOCK_K // 4
    m = tl.arange(0, BLOCK_M)
    xcol = x_ptr + tl.minimum(m, M - 1)[None, :].to(tl.int64) * stride_xm
    n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    nmask = n < N
    t = tl.arange(0, T)
    q16 = qw_ptr.to(tl.pointer_type(tl.int16))
    # int16 t of the tile: word row k0 / 8 + t // 2, half t % 2 (words of n: int16 2n, 2n + 1)
    toff = (t // 2).to(tl.int64) * (2 * stride_qwr) + t % 2
    acc = tl.zeros((BLOCK_N, BLOCK_M), dtype=tl.float32)
    k_lo = pid_s * k_per_split
    k_hi = tl.minimum(k_lo + k_per_split, K)
    for k0 in range(k_lo, k_hi, BLOCK_K):
        hp = q16 + (k0 // 8) * (2 * stride_qwr) + toff[None, :] + 2 * n[:, None]
        kx = k0 + 4 * t
        if EVEN_K:
            x0 = tl.load(xcol + kx[:, None])
            x1 = tl.load(xcol + kx[:, None] + 1)
            x2 = tl.load(xcol + kx[:, None] + 2)
            x3 = tl.load(xcol + kx[:, None] + 3)
            if EVEN_N:
                h = tl.load(hp)
            else:
                h = tl.load(hp, mask=nmask[:, None], other=0)
        else:
            # K is a multiple of 8, so an int16 is in or out of the tile whole
            x0 = tl.load(xcol + kx[:, None], mask=(kx < k_hi)[:, None], other=0.0)
            x1 = tl.load(xcol + kx[:, None] + 1, mask=(kx + 1 < k_hi)[:, None], other=0.0)
            x2 = tl.load(xcol + kx[:, None] + 2, mask=(kx + 2 < k_hi)[:, None], other=0.0)
            x3 = tl.load(xcol + kx[:, None] + 3, mask=(kx + 3 < k_hi)[:, None], other=0.0)
            h = tl.load(hp, mask=nmask[:, None] & (kx < k_hi)[None, :], other=0)
        part = tl.dot(_plane(h, 0, DT, ASM), x0)
        part = tl.dot(_plane(h, 1, DT, ASM), x1, part)
        part = tl.dot(_plane(h, 2, DT, ASM), x2, part)
        part = tl.dot(_plane(h, 3, DT, ASM), x3, part)
        xs = tl.sum(x0.to(tl.float32) + x1.to(tl.float32) + x2.to(tl.float32) + x3.to(tl.float32), axis=0)[None, :]
        if GROUP == 0:
            g = 0
        else:
            g = k0 // GROUP
        if EVEN_N:
            zw = tl.load(qz_ptr + g * stride_qzr + n // 8)
            sc = tl.load(s_ptr + g * stride_sr + n)
        else:
            zw = tl.load(qz_ptr + g * stride_qzr + n // 8, mask=nmask, other=0)
            sc = tl.load(s_ptr + g * stride_sr + n, mask=nmask, other=0.0)
        zb = ((zw >> ((n % 8) * 4)) & 0xF).to(tl.float32) + BIAS
        acc += sc.to(tl.float32)[:, None] * (part - zb[:, None] * xs)
    _v2_out(acc, n, m, M, N, y_ptr, stride_ym, part_ptr, pid_s, b_ptr, HAS_BIAS, SPLIT)
    if SPLIT:
        _v2_reduce(part_ptr, cnt_ptr, b_ptr, y_ptr, M, N, stride_ym, pid_n, HAS_BIAS, BLOCK_M, BLOCK_N)


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


# "v3a" (the default; AWQ layout, prepared GPTQ included; w4a16_v3.py: v2 with the next tile's
# scales / zeros prefetched and split counts from an H200 sweep): Llama-3-8B AWQ decode-b1 322.0 tok/s
# against v2's 279.6 in the same call (2026-12-01).  "v4" (w4a16_v4.py, opt-in): one tensor-core
# dot a trip instead of four; slower than v3a at every Llama-3-8B shape (H200, 2026-12-02, cold
# weights: gate_up 57.7 against 27.4 us), kept as the record of that attempt.  "v2": the kernel
# below; "v1": the CUDA-core dequantizing GEMV above, kept for comparison (bench_quant_gemm.py).
# Env HALINFER_W4A16_GEMV overrides.
GEMV_IMPL = "v3a"
GEMV_V2_ASM = True  # v2 unpacks two nibbles per instruction (inline PTX); False: plain Triton (as the interpreter)

# (BLOCK_N, BLOCK_K, num_warps, num_stages[, splits]) forced for the v2 GEMV (the --sweep of
# bench_quant_gemm.py); BLOCK_K is taken only where it fits the group
GEMV_V2_CONFIG_OVERRIDE: dict = {}

def _counters(device, tiles: int):
    """The device's split-K tile counters (at least ``tiles``), or None inside a CUDA-graph
    capture that would have to allocate them (the caller then runs one split: no counter)."""
    return zeroed_counters(device, tiles, "w4a16 split-K")


def _gemv_v2_config(fmt, M, N, K, group, interp, device):
    """(BLOCK_N, BLOCK_K, splits, num_warps, num_stages), or None when no K tile fits the group.
    A K tile lies in one group; GPTQ's dots are BLOCK_K / 4 deep, so it needs BLOCK_K >= 64."""
    ks = (128, 64, 32, 16) if fmt == 0 else (128, 64)
    bk = next((b for b in ks if group % b == 0 or group >= K), None)
    if bk is None or N % 8 or (fmt == 1 and K % 8):
        return None
    if interp:
        # small tiles (AWQ's planes are BLOCK_N / 4 = 16 rows, the least a dot takes), up to
        # four splits, so that the tests reach the last-program reduction
        bn, bk = 64, (min(bk, 64) if fmt == 0 else 64)
        return bn, bk, max(1, min(4, cdiv(K, bk) // 2)), 1, 1
    # 256 columns: AWQ's planes are then 64 columns, wgmma's 64 rows (at 128, 32 rows fall
    # back to mma.sync and lose the two-lanes-per-register unpack); GPTQ does 0.7 fewer
    # instructions per weight at 256 than at 128 (SASS counts, 240-odd registers, no spills).
    # One warpgroup; 4 stages keep three K tiles' loads in flight
    bn, warps, stages = 256, 4, 4
    splits = None
    if GEMV_V2_CONFIG_OVERRIDE:
        cfg = GEMV_V2_CONFIG_OVERRIDE["config"]
        bn, bk_o, warps, stages = cfg[:4]
        splits = cfg[4] if len(cfg) > 4 else None
        if bk_o in ks and bk_o <= bk and bk % bk_o == 0:
            bk = bk_o
    if splits is None:
        # about three programs per SM, each streaming at least two K tiles; with several rows
        # the float32 partials (splits * M * N * 8 bytes written and read) stay within an
        # eighth of the weight bytes (K * N / 2)
        splits = max(1, min(cdiv(3 * sm_count(device), cdiv(N, bn)), cdiv(K, bk) // 2, K // (64 * M), 32))
    return bn, bk, splits, warps, stages


def _split_k_buffers(x, N, bn, bk, splits):
    """(k_per_split, splits, column tiles, tile counters or None, y, float32 partials or y) of a
    split-K GEMV launch; one split when counters cannot be allocated (inside a graph capture)."""
    M, K = x.shape
    k_per_split = cdiv(cdiv(K, splits), bk) * bk
    splits = cdiv(K, k_per_split)
    tiles = cdiv(N, bn)
    cnt = _counters(x.device, tiles) if splits > 1 else None
    if cnt is None and splits > 1:
        k_per_split, splits = cdiv(K, bk) * bk, 1
    y = torch.empty((M, N), dtype=x.dtype, device=x.device)
    part = torch.empty((splits, M, N), dtype=torch.float32, device=x.device) if splits > 1 else y
    return k_per_split, splits, tiles, cnt, y, part


def _gemv_v2(fmt, x, qweight, qzeros, scales, group, bias, N):
    """4-bit, plain groups, fp16 / bf16 x, M <= 16: one launch, y in x's dtype (None: no tile fits)."""
    interp = on_interpreter(x)
    M, K = x.shape
    cfg = _gemv_v2_config(fmt, M, N, K, group, interp, x.device)
    if cfg is None:
        return None
    bn, bk, splits, warps, stages = cfg
    k_per_split, splits, tiles, cnt, y, part = _split_k_buffers(x, N, bn, bk, splits)
    kernel = _w4a16_gemv_v2_awq_kernel if fmt == 0 else _w4a16_gemv_v2_gptq_kernel
    kernel[(tiles, splits)](
        x, qweight, qzeros, scales, y if bias is None else bias, y, part, y if cnt is None else cnt,
        M, N, K, k_per_split, x.stride(0), qweight.stride(0), qzeros.stride(0), scales.stride(0), y.stride(0),
        DT=tl.float16 if x.dtype == torch.float16 else tl.bfloat16, GROUP=0 if group >= K else group,
        HAS_BIAS=bias is not None, SPLIT=splits > 1, EVEN_K=K % bk == 0, EVEN_N=N % bn == 0,
        ASM=GEMV_V2_ASM and not interp and torch.version.hip is None, BLOCK_M=16, BLOCK_N=bn, BLOCK_K=bk, num_warps=warps, num_stages=stages)
    return y


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
    impl = os.environ.get("HALINFER_W4A16_GEMV", GEMV_IMPL)
    if impl.startswith("v3") and fmt == 0 and bits == 4 and x.dtype in (torch.float16, torch.bfloat16):
        from . import w4a16_v3
        y = w4a16_v3.gemv(impl, x, qweight, qzeros, scales, group, bias, N)
        if y is not None:
            return y
    if impl == "v4" and fmt == 0 and bits == 4 and x.dtype in (torch.float16, torch.bfloat16):
        from . import w4a16_v4   # one dot a trip (opt-in: slower than v3a, see GEMV_IMPL)
        y = w4a16_v4.gemv(x, qweight, qzeros, scales, group, bias, N)
        if y is not None:
            return y
    if (impl in ("v2", "v4") or impl.startswith("v3")) and bits == 4 and not act_order and x.dtype in (torch.float16, torch.bfloat16):
        y = _gemv_v2(fmt, x, qweight, qzeros, scales, group, bias, N)
        if y is not None:
            return y
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


def _deferred_gemv(x, qweight, qzeros, scales, group_size, bias, **deferred):
    """The v3a / v3c GEMV at batch 1 with a deferred input (w4a16_v3.gemv's norm= / act=), or
    None where it does not take the call (the caller composes)."""
    impl = os.environ.get("HALINFER_W4A16_GEMV", GEMV_IMPL)
    if (impl not in ("v3a", "v3c") or x.dim() != 2 or x.shape[0] != 1
            or x.dtype not in (torch.float16, torch.bfloat16) or not x.is_contiguous()):
        return None
    from . import w4a16_v3
    return w4a16_v3.gemv(impl, x, _contig(qweight), _contig(qzeros), _contig(scales), group_size, bias,
                         scales.shape[1], **deferred)


def awq_linear_normed(xn, qweight, scales, qzeros, group_size, bias=None):
    """core.ops.w4a16_linear_normed's contract at batch 1 on the v3a / v3c GEMV (the norm in
    the GEMV's programs); None where that GEMV does not take the call (the caller composes)."""
    x, r, nw, so = xn.x, xn.residual, xn.weight, xn.stream
    if r.shape != x.shape or not (x.dtype == r.dtype == nw.dtype == so.dtype) \
            or not all(t.is_contiguous() for t in (r, nw, so)):
        return None
    return _deferred_gemv(x, qweight, qzeros, scales, group_size, bias, norm=(r, nw, so, xn.eps))


def awq_linear_gated(xg, qweight, scales, qzeros, group_size, bias=None):
    """core.ops.w4a16_linear_gated's contract at batch 1 on the v3a / v3c GEMV (the activation
    in its x loads); None where that GEMV does not take the call (the caller composes)."""
    from .activation import KINDS

    if xg.kind not in KINDS:
        return None
    return _deferred_gemv(xg.h, qweight, qzeros, scales, group_size, bias, act=KINDS[xg.kind])


def _awq_rows(qweight: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """GPTQ qweight (4-bit, packed along K) -> AWQ qweight [len(rows), N/8] holding input rows
    ``rows`` in that order: row k sits in word row k // 8, nibble k % 8."""
    nib = (qweight.index_select(0, rows // 8) >> (4 * (rows % 8)).to(torch.int32)[:, None]) & 0xF
    return awq_pack(nib)


def gptq_prepare(qweight, qzeros, scales, g_idx, bits):
    """Ops.prepare_gptq on the Triton table: 4-bit GPTQ whose groups are (or, sorted by g_idx,
    become) plain runs of ``group`` input rows is re-laid into AWQ's layout, so gptq_linear runs
    AWQ's kernels: GPTQ packs along K, so each v2 GEMV dot is a quarter as deep as AWQ's (packed
    along N), and act-order g_idx keeps GPTQ off v2 altogether.  Returned:
      qweight int32 [K, N/8]: row k' is input row perm[k'], AWQ nibble order (AWQ_ORDER);
      qzeros  int32 [G, N/8]: the true zeros (the op's convention, v1 already converted), AWQ
              order; AWQ's kernels read them the same way: w = (q - z) * s;
      scales  [G, N] unchanged;  g_idx None;
      awq_group: the group size (rows k' of group k' // awq_group);
      perm: int64 [K] on the device (x's columns are gathered, x[:, perm], before the GEMM),
            or None when g_idx is already i // group.
    Everything else is returned unchanged (gptq_linear then runs the GPTQ kernels): 8-bit (AWQ's
    kernels unpack nibbles only), K or N not a multiple of 8, or groups of unequal sizes (AWQ
    takes one group size).  Syncs the host (load time only)."""
    same = {"qweight": qweight, "qzeros": qzeros, "scales": scales, "g_idx": g_idx}
    K, N = g_idx.shape[0], scales.shape[1]
    if bits != 4 or K % 8 or N % 8 or tuple(qweight.shape) != (K // 8, N) or K == 0:
        return same
    dev = qweight.device
    g = g_idx.to(device=dev, dtype=torch.int64)
    perm = torch.argsort(g, stable=True)          # groups contiguous, rows in their order within one
    gs = int((g == 0).sum())
    if gs == 0 or cdiv(K, gs) > scales.shape[0] or \
            not torch.equal(g[perm], torch.arange(K, device=dev) // gs):
        return same
    if torch.equal(perm, torch.arange(K, device=dev)):
        perm = None
    rows = torch.arange(K, device=dev) if perm is None else perm
    # in chunks of input rows: the int64 unpacked values of one chunk stay near 128 MiB
    step = max(8, (1 << 24) // max(1, N) // 8 * 8)
    qw = torch.cat([_awq_rows(qweight, rows[a:a + step]) for a in range(0, K, step)])
    zeros = gptq_unpack_cols(qzeros, 4)
    return {"qweight": qw, "qzeros": awq_pack(zeros), "scales": scales, "g_idx": None, "awq_group": gs,
            "perm": perm}


def gptq_linear(x, qweight, qzeros, scales, g_idx, bits, bias=None, *, awq_group=None, perm=None):
    """core.ops.gptq.gptq_linear's contract, on gptq_prepare's output: with ``awq_group`` the
    tensors are AWQ's layout (AWQ's kernels: the v2 GEMV for M <= 16, the tiled and dequantizing
    ones above), x's columns gathered by ``perm`` first; without it, GPTQ's layout (what
    gptq_prepare leaves unchanged, and raw checkpoint tensors in the kernel tests)."""
    if awq_group is not None:
        if perm is not None:
            x = x.index_select(1, perm)     # one gather; the weight rows are already in perm's order
        return _launch(0, x, qweight, qzeros, scales, None, awq_group, 4, bias, scales.shape[1])
    return _launch(1, x, qweight, qzeros, scales, g_idx, 1, bits, bias, scales.shape[1])
