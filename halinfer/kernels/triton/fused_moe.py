"""Fused mixture-of-experts: all experts' first GEMMs in one launch, all second GEMMs in another.

1. Align (moe_align.py, on the device, graph-capturable): the T*k (token, choice)
   pairs grouped by expert, each expert's run padded to a multiple of BLOCK_M, so
   every M-tile belongs to one expert.
2. GEMM 1 (grid: M-tiles x I-tiles): for its pairs' tokens, the tile computes the
   gate columns and the matching up columns of ``x @ w13[e]^T`` side by side, adds
   the biases, applies the gated activation and stores h [T*k, I] (x's dtype).
3. GEMM 2 (grid: M-tiles x H-tiles): y[pair] = weight[pair] * (h[pair] @ w2[e]^T + b2[e]).
4. out[t] = sum over the k choices of y (float32 accumulation), in x's dtype, one launch.

Tiles come from moe_tuning.py: a measured table per shape and card, else a rule.

Weights are read as the core contract stores them: w13 [E, 2I, H] gate rows first,
w2 [E, H, I]; activations: silu, gelu, gelu_tanh, swiglu_oai (alpha 1.702, limit 7).
"""
import torch
import triton
import triton.language as tl

from .common import cdiv, dot_precision, next_pow2, on_interpreter
from .moe_align import align_pairs
from .moe_tuning import INTERPRETER, MoeConfig, pick_config
from .tl_math import gelu_tanh

ACTIVATIONS = {"silu": 0, "gelu": 1, "gelu_tanh": 2, "swiglu_oai": 3}
SWIGLU_ALPHA, SWIGLU_LIMIT = 1.702, 7.0


@triton.jit
def _gemm1_act_kernel(x_ptr, w_ptr, b_ptr, h_ptr, pairs_ptr, block_expert_ptr,
                      num_pairs, H, I, top_k, E,
                      stride_xt, stride_we, stride_wn, stride_be, stride_hm,
                      alpha, limit,
                      ACT: tl.constexpr, HAS_BIAS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                      BLOCK_K: tl.constexpr, PREC: tl.constexpr):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    e = tl.load(block_expert_ptr + pid_m)
    if e >= E:
        return
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    pair = tl.load(pairs_ptr + rows)
    valid = pair < num_pairs
    tok = (pair // top_k).to(tl.int64)
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    cmask = cols < I
    kk = tl.arange(0, BLOCK_K)
    a_ptrs = x_ptr + tok[:, None] * stride_xt + kk[None, :]
    g_ptrs = w_ptr + e.to(tl.int64) * stride_we + cols[None, :].to(tl.int64) * stride_wn + kk[:, None]
    u_ptrs = g_ptrs + I * stride_wn
    acc_g = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    acc_u = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    for k0 in range(0, H, BLOCK_K):
        kmask = (k0 + kk) < H
        a = tl.load(a_ptrs, mask=valid[:, None] & kmask[None, :], other=0.0)
        wg = tl.load(g_ptrs, mask=kmask[:, None] & cmask[None, :], other=0.0)
        wu = tl.load(u_ptrs, mask=kmask[:, None] & cmask[None, :], other=0.0)
        acc_g = tl.dot(a, wg, acc_g, input_precision=PREC)
        acc_u = tl.dot(a, wu, acc_u, input_precision=PREC)
        a_ptrs += BLOCK_K
        g_ptrs += BLOCK_K
        u_ptrs += BLOCK_K
    if HAS_BIAS:
        bb = b_ptr + e.to(tl.int64) * stride_be
        acc_g += tl.load(bb + cols, mask=cmask, other=0.0).to(tl.float32)[None, :]
        acc_u += tl.load(bb + I + cols, mask=cmask, other=0.0).to(tl.float32)[None, :]
    g = acc_g
    if ACT == 0:
        act = g / (1.0 + tl.exp(-g))
    elif ACT == 1:
        act = 0.5 * g * (1.0 + tl.math.erf(g * 0.7071067811865476))
    elif ACT == 2:
        act = gelu_tanh(g)
    else:
        g = tl.minimum(g, limit)
        acc_u = tl.minimum(tl.maximum(acc_u, -limit), limit) + 1.0
        act = g / (1.0 + tl.exp(-alpha * g))
    h = act * acc_u
    tl.store(h_ptr + pair.to(tl.int64)[:, None] * stride_hm + cols[None, :], h.to(h_ptr.dtype.element_ty),
             mask=valid[:, None] & cmask[None, :])


@triton.jit
def _gemm2_kernel(h_ptr, w_ptr, b_ptr, tw_ptr, y_ptr, pairs_ptr, block_expert_ptr,
                  num_pairs, H, I, E,
                  stride_hm, stride_we, stride_wn, stride_be, stride_ym,
                  HAS_BIAS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                  PREC: tl.constexpr):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    e = tl.load(block_expert_ptr + pid_m)
    if e >= E:
        return
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    pair = tl.load(pairs_ptr + rows)
    valid = pair < num_pairs
    pair64 = pair.to(tl.int64)
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    cmask = cols < H
    kk = tl.arange(0, BLOCK_K)
    a_ptrs = h_ptr + pair64[:, None] * stride_hm + kk[None, :]
    w_ptrs = w_ptr + e.to(tl.int64) * stride_we + cols[None, :].to(tl.int64) * stride_wn + kk[:, None]
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    for k0 in range(0, I, BLOCK_K):
        kmask = (k0 + kk) < I
        a = tl.load(a_ptrs, mask=valid[:, None] & kmask[None, :], other=0.0)
        w = tl.load(w_ptrs, mask=kmask[:, None] & cmask[None, :], other=0.0)
        acc = tl.dot(a, w, acc, input_precision=PREC)
        a_ptrs += BLOCK_K
        w_ptrs += BLOCK_K
    if HAS_BIAS:
        acc += tl.load(b_ptr + e.to(tl.int64) * stride_be + cols, mask=cmask, other=0.0).to(tl.float32)[None, :]
    wt = tl.load(tw_ptr + pair64, mask=valid, other=0.0)
    acc = acc * wt[:, None]
    tl.store(y_ptr + pair64[:, None] * stride_ym + cols[None, :], acc.to(y_ptr.dtype.element_ty),
             mask=valid[:, None] & cmask[None, :])


@triton.jit
def _sum_choices_kernel(y_ptr, out_ptr, H, K: tl.constexpr, BLOCK_H: tl.constexpr):
    t = tl.program_id(0).to(tl.int64)
    h = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    hmask = h < H
    acc = tl.zeros([BLOCK_H], dtype=tl.float32)
    for j in tl.static_range(K):
        acc += tl.load(y_ptr + (t * K + j) * H + h, mask=hmask, other=0.0).to(tl.float32)
    tl.store(out_ptr + t * H + h, acc.to(out_ptr.dtype.element_ty), mask=hmask)


def fused_moe(x: torch.Tensor, w13: torch.Tensor, w2: torch.Tensor, topk_weights: torch.Tensor,
              topk_ids: torch.Tensor, *, activation: str = "silu", w13_bias: torch.Tensor | None = None,
              w2_bias: torch.Tensor | None = None, config: MoeConfig | None = None) -> torch.Tensor:
    """core.ops.moe.fused_moe on Triton; ``config`` fixes the tiles (tuning), else the table or rule."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"fused_moe: unknown activation {activation!r}; known: {', '.join(ACTIVATIONS)}")
    interp = on_interpreter(x)
    T, H = x.shape
    E, I2, H1 = w13.shape
    I = I2 // 2
    k = topk_ids.shape[1]
    assert H1 == H and tuple(w2.shape) == (E, H, I), f"fused_moe: w13 {tuple(w13.shape)}, w2 {tuple(w2.shape)}, H={H}"
    assert w13.dtype == x.dtype == w2.dtype, "fused_moe: x, w13 and w2 must share a dtype"
    if T == 0:
        return torch.empty_like(x)
    x = x if x.stride(-1) == 1 else x.contiguous()
    w13 = w13 if w13.stride(-1) == 1 else w13.contiguous()
    w2 = w2 if w2.stride(-1) == 1 else w2.contiguous()
    m = T * k
    cfg = config or (INTERPRETER if interp else pick_config(T, k, E, H, I, x.dtype, x.device))
    bm, g1, g2 = cfg.block_m, cfg.gemm1, cfg.gemm2
    pairs, block_expert = align_pairs(topk_ids, E, bm)
    tiles = block_expert.shape[0]
    prec = dot_precision(x.dtype)
    h = torch.empty(m, I, dtype=x.dtype, device=x.device)
    b13 = w13_bias if w13_bias is not None else w13   # any pointer when HAS_BIAS is off
    _gemm1_act_kernel[(tiles, cdiv(I, g1.block_n))](
        x, w13, b13, h, pairs, block_expert, m, H, I, k, E,
        x.stride(0), w13.stride(0), w13.stride(1), b13.stride(0), h.stride(0),
        SWIGLU_ALPHA, SWIGLU_LIMIT,
        ACT=ACTIVATIONS[activation], HAS_BIAS=w13_bias is not None, BLOCK_M=bm, BLOCK_N=g1.block_n,
        BLOCK_K=g1.block_k, PREC=prec, num_warps=g1.num_warps, num_stages=g1.num_stages)
    tw = topk_weights.reshape(-1).to(torch.float32).contiguous()
    y = torch.empty(m, H, dtype=x.dtype, device=x.device)
    b2 = w2_bias if w2_bias is not None else w2
    _gemm2_kernel[(tiles, cdiv(H, g2.block_n))](
        h, w2, b2, tw, y, pairs, block_expert, m, H, I, E,
        h.stride(0), w2.stride(0), w2.stride(1), b2.stride(0), y.stride(0),
        HAS_BIAS=w2_bias is not None, BLOCK_M=bm, BLOCK_N=g2.block_n, BLOCK_K=g2.block_k, PREC=prec,
        num_warps=g2.num_warps, num_stages=g2.num_stages)
    if k == 1:
        return y
    out = torch.empty_like(x)
    block_h = min(1024, next_pow2(H))
    _sum_choices_kernel[(T, cdiv(H, block_h))](y, out, H, K=k, BLOCK_H=block_h, num_warps=4 if not interp else 1)
    return out
