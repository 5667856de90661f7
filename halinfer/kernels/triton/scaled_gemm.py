"""8-bit GEMMs with per-row and per-group scales: W8A8 int8 (core/ops/quant.py: w8a8_linear)
and FP8 e4m3 (core/ops/fp8.py: fp8_linear, block-scaled or per channel).

Activations are quantized per token first, in one launch (act_quant.py, the references'
arithmetic), then one GEMM multiplies the 8-bit operands:
- FP8 with bf16 activations on GPUs that have it goes to cuBLASLt through
  torch._scaled_mm: rowwise scales for per-channel / per-tensor weights (Ada, Hopper), and
  the block-scaled recipe (1x128 activation groups, 128x128 weight blocks) on SM90 with
  CUDA >= 12.9, whose scale layout is built once per weight (_block_scales).
- Everything else runs the Triton kernel here: int32 accumulation for int8 (exact), float32
  for fp8; with one scale group per row (per-channel weights, W8A8) the scales are applied
  once after the K loop, with groups at each K tile (BLOCK_K divides the group width).
- W8A8 can instead use cuBLASLt's int8 GEMM (torch._int_mm) plus one epilogue launch
  (INT8_GEMM; the benchmark decides which is the default).
"""
import weakref

import torch
import triton
import triton.language as tl

from .act_quant import quant_fp8_groups, quant_int8_rows
from .common import cdiv, on_interpreter, sm_count


@triton.jit
def _scaled_gemm_kernel(a_ptr, b_ptr, as_ptr, bs_ptr, bias_ptr, out_ptr, M, N, K, group,
                        stride_am, stride_bn, stride_asm, stride_bsn, stride_om,
                        INT8: tl.constexpr, HAS_BIAS: tl.constexpr, ONE_GROUP: tl.constexpr,
                        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                        GROUP_M: tl.constexpr):
    # grouped launch order: GROUP_M row tiles share each column tile's weights in L2
    pid = tl.program_id(0)
    tiles_m, tiles_n = tl.cdiv(M, BLOCK_M), tl.cdiv(N, BLOCK_N)
    width = GROUP_M * tiles_n
    first_m = (pid // width) * GROUP_M
    rows = tl.minimum(tiles_m - first_m, GROUP_M)
    pid_m = first_m + (pid % width) % rows
    pid_n = (pid % width) // rows
    m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mmask, nmask = m < M, n < N
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    iacc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.int32)
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
        if ONE_GROUP:
            # one scale per row and column: sum over all of K first, scale once after the loop
            if INT8:
                iacc = tl.dot(a, b, iacc, out_dtype=tl.int32)
            else:
                acc = tl.dot(a, b, acc, out_dtype=tl.float32)
        else:
            if INT8:
                part = tl.dot(a, b, out_dtype=tl.int32).to(tl.float32)
            else:
                part = tl.dot(a, b, out_dtype=tl.float32)
            g = k0 // group
            sa = tl.load(as_ptr + m * stride_asm + g, mask=mmask, other=0.0)
            sb = tl.load(bs_ptr + n * stride_bsn + g, mask=nmask, other=0.0)
            acc += part * sa[:, None] * sb[None, :]
    if ONE_GROUP:
        if INT8:
            acc = iacc.to(tl.float32)
        sa = tl.load(as_ptr + m * stride_asm, mask=mmask, other=0.0)
        sb = tl.load(bs_ptr + n * stride_bsn, mask=nmask, other=0.0)
        acc = acc * sa[:, None] * sb[None, :]
    if HAS_BIAS:
        acc += tl.load(bias_ptr + n, mask=nmask, other=0.0).to(tl.float32)[None, :]
    tl.store(out_ptr + m[:, None].to(tl.int64) * stride_om + n[None, :], acc.to(out_ptr.dtype.element_ty),
             mask=mmask[:, None] & nmask[None, :])


@triton.jit
def _int_mm_epilogue_kernel(acc_ptr, as_ptr, bs_ptr, bias_ptr, out_ptr, M, N, stride_acc, stride_om,
                            HAS_BIAS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    mask = (m < M)[:, None] & (n < N)[None, :]
    acc = tl.load(acc_ptr + m[:, None].to(tl.int64) * stride_acc + n[None, :], mask=mask, other=0).to(tl.float32)
    sa = tl.load(as_ptr + m, mask=m < M, other=0.0)
    sb = tl.load(bs_ptr + n, mask=n < N, other=0.0)
    y = acc * sa[:, None] * sb[None, :]
    if HAS_BIAS:
        y += tl.load(bias_ptr + n, mask=n < N, other=0.0).to(tl.float32)[None, :]
    tl.store(out_ptr + m[:, None].to(tl.int64) * stride_om + n[None, :], y.to(out_ptr.dtype.element_ty), mask=mask)


def _block_k(group: int, K: int, interp: bool) -> int:
    for bk in ((32, 16) if interp else (128, 64, 32, 16)):
        if group % bk == 0 or group >= K and bk <= max(16, K):
            return bk
    return 16


# (BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages) forced for M > 64 (benchmarks/kernels/
# bench_quant_gemm.py --sweep-8bit tries configs through this)
CONFIG_OVERRIDE: dict = {}


def _config(M: int, N: int, bk: int, interp: bool, int8: bool, sms: int) -> tuple[int, int, int, int, int]:
    if interp:
        return 16, 32, bk, 1, 1
    if M <= 16:
        # memory-bound: narrower column tiles until the grid fills the GPU (down_proj's 4,096
        # columns in 128-wide tiles were 32 programs: half the bf16 GEMV's speed on an H200)
        bn = 128
        while bn > 32 and cdiv(N, bn) < sms:
            bn //= 2
        return 16, bn, bk, 4, 3
    if M <= 64:
        return 64, 128, bk, 4, 3
    if CONFIG_OVERRIDE:
        bm, bn, bk_o, warps, stages = CONFIG_OVERRIDE["config"]
        return bm, bn, (bk_o if bk % bk_o == 0 else bk), warps, stages
    # measured on an H200 (bench_8bit_gemm.py --sweep, M = 1024 and 4096, Llama-3-8B shapes):
    # int8 1,100-1,200 TFLOP/s at 128x128x128 / 8 warps; fp8 with a scale per K tile ~390 at 64x128x128
    return (128, 128, bk, 8, 3) if int8 else (64, 128, bk, 4, 4)


def _launch(a, a_scale, b, b_scale, group, bias, out_dtype, int8):
    interp = on_interpreter(a)
    M, K = a.shape
    N = b.shape[0]
    out = torch.empty((M, N), dtype=out_dtype, device=a.device)
    if M == 0:
        return out
    one_group = group >= K
    bm, bn, bk, warps, stages = _config(M, N, _block_k(group, K, interp), interp, int8, sm_count(a.device))
    if not int8:
        a, b = a.view(torch.uint8), b.view(torch.uint8)
    _scaled_gemm_kernel[(cdiv(M, bm) * cdiv(N, bn),)](
        a, b, a_scale, b_scale, a if bias is None else bias, out, M, N, K, K if one_group else group,
        a.stride(0), b.stride(0), a_scale.stride(0), b_scale.stride(0), out.stride(0),
        INT8=int8, HAS_BIAS=bias is not None, ONE_GROUP=one_group, BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk,
        GROUP_M=8, num_warps=warps, num_stages=stages)
    return out


# W8A8 GEMM for M > INT_MM_MIN_M: "triton" (the kernel above) or "int_mm" (cuBLASLt through
# torch._int_mm, int32 out, then one epilogue launch applies the scales); the benchmark
# (bench_quant_gemm.py) picks the default.
INT8_GEMM = "triton"
INT_MM_MIN_M = 64


def _int_mm_ok(x, weight) -> bool:
    M, K = x.shape
    return (INT8_GEMM == "int_mm" and x.device.type == "cuda" and hasattr(torch, "_int_mm") and M > INT_MM_MIN_M
            and K % 8 == 0 and weight.shape[0] % 8 == 0 and weight.stride(1) == 1)


def _int_mm(xq, xs, weight, ws, bias, out_dtype):
    acc = torch._int_mm(xq, weight.t())
    M, N = acc.shape
    out = torch.empty((M, N), dtype=out_dtype, device=xq.device)
    _int_mm_epilogue_kernel[(cdiv(M, 64), cdiv(N, 128))](
        acc, xs, ws, xq if bias is None else bias, out, M, N, acc.stride(0), out.stride(0),
        HAS_BIAS=bias is not None, BLOCK_M=64, BLOCK_N=128, num_warps=4)
    return out


def w8a8_linear(x, weight, weight_scale, bias=None):
    """core.ops.quant.w8a8_linear's contract."""
    xq, xs = quant_int8_rows(x)
    return _w8a8_gemm(xq, xs, weight, weight_scale, bias, x.dtype)


def w8a8_linear_prequant(xq, weight, weight_scale, bias=None):
    """core.ops.norm_quant.w8a8_linear_prequant's contract: w8a8_linear's GEMM on
    activations rms_norm_quant already quantized."""
    q, s = xq.values()
    return _w8a8_gemm(q, s, weight, weight_scale, bias, xq.dtype)


def _w8a8_gemm(xq, xs, weight, weight_scale, bias, out_dtype):
    ws = weight_scale.float().contiguous()
    if _int_mm_ok(xq, weight):
        return _int_mm(xq, xs, weight, ws, bias, out_dtype)
    K = xq.shape[1]
    return _launch(xq, xs[:, None], weight, ws[:, None], K, bias, out_dtype, True)


# (device, kind, K, N) -> why torch._scaled_mm refused that GEMM once (then: the Triton kernel).
# Keyed by shape: cuBLASLt may refuse one small shape (seen: a small block-scaled GEMM) and take the rest.
_SCALED_MM_BROKEN: dict = {}


def _scaled_mm_ok(x, weight, block_k, kind, dtype=None) -> bool:
    """x: the activations [T, K] (float, or their fp8 quantization with ``dtype`` the float one)."""
    K, N = x.shape[1], weight.shape[0]
    if x.device.type != "cuda" or (dtype or x.dtype) != torch.bfloat16 or not hasattr(torch, "_scaled_mm"):
        return False
    if K % 16 or N % 16 or weight.stride(1) != 1 or (str(x.device), kind, K, N) in _SCALED_MM_BROKEN:
        return False
    cap = torch.cuda.get_device_capability(x.device)
    if kind == "rowwise":
        return block_k >= K and cap >= (8, 9)
    # cuBLASLt's block-scaled FP8 (1x128 activations, 128x128 weights) exists for SM90 only (CUDA >= 12.9)
    return block_k == 128 and K % 128 == 0 and N % 128 == 0 and cap[0] == 9


def _scaled_mm(xq, xs, wt, ws, bias, out_dtype, kind):
    """cuBLASLt FP8 GEMM through torch._scaled_mm; None when this torch / GPU refuses it."""
    try:
        y = torch._scaled_mm(xq, wt, scale_a=xs, scale_b=ws, out_dtype=out_dtype)
    except (RuntimeError, TypeError, NotImplementedError, ValueError) as e:
        _SCALED_MM_BROKEN[(str(xq.device), kind, xq.shape[1], wt.shape[1])] = f"{type(e).__name__}: {e}"
        return None
    return y if bias is None else y + bias.to(y.dtype)


BLOCK_SCALED_MM_MIN_M = 1   # block-scaled FP8 from this M on goes to cuBLASLt (set from bench_8bit_gemm.py)
_BLOCK_SCALES: dict = {}   # id(weight_scale) -> (weakref, version, [L4, N/128] scales or None)


def _block_scales(ws: torch.Tensor):
    """The contract's per-row weight scales [N, K/128] as cuBLASLt's 128x128 block scales:
    [N/128, L4] (K/128 padded to a multiple of 4), passed transposed ([L4, N/128], stride
    (1, L4)).  None when rows within a 128-row block differ (a merged matrix whose parts
    do not start at multiples of 128): then only the Triton kernel is right.  Built once
    per tensor, outside graph capture (the check syncs)."""
    hit = _BLOCK_SCALES.get(id(ws))
    if hit is not None and hit[0]() is ws and hit[1] == ws._version:
        return hit[2]
    if torch.cuda.is_current_stream_capturing():
        return None
    N, G = ws.shape
    blocks = ws[::128].float()
    ok = bool(torch.equal(blocks.repeat_interleave(128, dim=0)[:N], ws.float()))
    prepared = None
    if ok:
        L4 = cdiv(G, 4) * 4
        padded = torch.ones((N // 128, L4), dtype=torch.float32, device=ws.device)
        padded[:, :G] = blocks
        prepared = padded.t()
    _BLOCK_SCALES[id(ws)] = (weakref.ref(ws), ws._version, prepared)
    return prepared


def fp8_linear(x, weight, weight_scale, block_k, bias=None, input_scale=None):
    """core.ops.fp8.fp8_linear's contract."""
    T, K = x.shape
    if input_scale is not None:
        xq = (x.float() / input_scale.float()).clamp(-448.0, 448.0).to(torch.float8_e4m3fn)
        xs = input_scale.float().reshape(1, 1).expand(T, 1).contiguous()
        if T and _scaled_mm_ok(x, weight, block_k, "rowwise"):
            y = _scaled_mm(xq, xs, weight.t(), weight_scale.float().reshape(1, -1).contiguous(), bias, x.dtype,
                           "rowwise")
            if y is not None:
                return y
        return _launch(xq, xs, weight, weight_scale.float().contiguous(), block_k, bias, x.dtype, False)

    def quantize(group, pad_rows_to=1, scales_col_major=False):
        return quant_fp8_groups(x, group, pad_rows_to=pad_rows_to, scales_col_major=scales_col_major)
    return _fp8_dynamic(x, quantize, T, x.dtype, weight, weight_scale, block_k, bias)


def fp8_linear_prequant(xq, weight, weight_scale, block_k, bias=None):
    """core.ops.norm_quant.fp8_linear_prequant's contract: fp8_linear's dispatch on
    activations rms_norm_quant already quantized, in whichever layout it left them; a path
    that wants another layout gets a view (q[:T]) or a copy of the [T, G] scales, and only
    the block-scaled cuBLASLt path given unpadded rows copies q (block_layout_wanted keeps
    that from happening)."""
    T, K = xq.rows, xq.q.shape[1]
    assert xq.spec.kind == "fp8" and min(xq.spec.group, K) == min(block_k, K), \
        f"fp8_linear_prequant(block_k={block_k}) got activations quantized as {xq.spec}"

    def quantize(group, pad_rows_to=1, scales_col_major=False):
        q, s = xq.q, xq.scale
        if not scales_col_major:
            # row-major paths (the Triton GEMM, rowwise cuBLASLt): the real rows, row-major scales
            return q[:T], s[:T].contiguous()
        if xq.scales_col_major and q.shape[0] % pad_rows_to == 0:
            return q, s
        Tp = cdiv(max(T, 1), pad_rows_to) * pad_rows_to
        # (as bytes: not every torch concatenates float8)
        q = torch.cat((q[:T].view(torch.uint8), q.new_zeros((Tp - T, K), dtype=torch.uint8))).view(q.dtype)
        s = torch.cat((s[:T], s.new_full((Tp - T, s.shape[1]), 1e-10 / 448.0)))
        return q, s.t().contiguous().t()
    return _fp8_dynamic(xq.q, quantize, T, xq.dtype, weight, weight_scale, block_k, bias)


def block_layout_wanted(x: torch.Tensor, group: int) -> bool:
    """Whether fp8 activations quantized from x [T, K] in groups of ``group`` should come
    padded with column-major scales: the block-scaled cuBLASLt path may take them (the
    conditions that do not depend on the weight).  rms_norm_quant asks this, so a fused
    norm writes the layout once instead of fp8_linear_prequant copying into it."""
    K = x.shape[-1]
    if x.shape[0] < BLOCK_SCALED_MM_MIN_M or x.device.type != "cuda" or x.dtype != torch.bfloat16:
        return False
    if group != 128 or K % 128 or not hasattr(torch, "_scaled_mm"):
        return False
    return torch.cuda.get_device_capability(x.device)[0] == 9


def _fp8_dynamic(a, quantize, T, out_dtype, weight, weight_scale, block_k, bias):
    """fp8_linear's dispatch with dynamic activation scales; a: the activations (float or
    fp8, only its shape, device and layout are read), quantize(group, pad_rows_to,
    scales_col_major) -> (q, s) their quantization in that layout."""
    K = a.shape[1]
    if T and _scaled_mm_ok(a, weight, block_k, "rowwise", out_dtype):
        xq, xs = quantize(K)
        y = _scaled_mm(xq, xs, weight.t(), weight_scale.float().reshape(1, -1).contiguous(), bias, out_dtype,
                       "rowwise")
        if y is not None:
            return y
    if T >= BLOCK_SCALED_MM_MIN_M and _scaled_mm_ok(a, weight, block_k, "block", out_dtype):
        bs = _block_scales(weight_scale)
        if bs is not None:
            # cuBLASLt wants the activation scales column-major and M a multiple of 4
            xq, xs = quantize(block_k, pad_rows_to=4, scales_col_major=True)
            y = _scaled_mm(xq, xs, weight.t(), bs, bias, out_dtype, "block")
            if y is not None:
                return y[:T]
    xq, xs = quantize(block_k)
    return _launch(xq, xs, weight, weight_scale.float().contiguous(), block_k, bias, out_dtype, False)
