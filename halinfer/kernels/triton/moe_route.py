"""MoE routing in one launch: scores, top-k, renormalisation and scaling per token.

Covers the common cases (softmax or sigmoid scores, an optional correction bias for
choosing, no expert groups): Qwen-MoE, Mixtral, gpt-oss, Llama 4 style routers and
DeepSeek-V3's bias without groups.  Grouped top-k goes to the core's reference.
The k winners come out in descending choice-score order, as torch.topk gives them;
among exactly equal scores the lowest expert id wins.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .common import next_pow2

@triton.jit
def _route_kernel(logits_ptr, bias_ptr, w_ptr, ids_ptr, E, stride_l, scaling,
                  K: tl.constexpr, K_PAD: tl.constexpr, BLOCK_E: tl.constexpr, SOFTMAX: tl.constexpr,
                  RENORM: tl.constexpr, HAS_BIAS: tl.constexpr):
    t = tl.program_id(0).to(tl.int64)
    e = tl.arange(0, BLOCK_E)
    emask = e < E
    x = tl.load(logits_ptr + t * stride_l + e, mask=emask, other=float("-inf")).to(tl.float32)
    if SOFTMAX:
        ex = tl.exp(x - tl.max(x, axis=0))
        s = ex / tl.sum(ex, axis=0)
    else:
        s = 1.0 / (1.0 + tl.exp(-x))
    choice = s
    if HAS_BIAS:
        choice = s + tl.load(bias_ptr + e, mask=emask, other=0.0).to(tl.float32)
    choice = tl.where(emask, choice, float("-inf"))
    j = tl.arange(0, K_PAD)
    wsel = tl.zeros([K_PAD], dtype=tl.float32)
    isel = tl.zeros([K_PAD], dtype=tl.int32)
    for i in tl.static_range(K):
        best = tl.max(choice, axis=0)
        idx = tl.min(tl.where(choice == best, e, BLOCK_E), axis=0)
        wi = tl.sum(tl.where(e == idx, s, 0.0), axis=0)
        wsel = tl.where(j == i, wi, wsel)
        isel = tl.where(j == i, idx, isel)
        choice = tl.where(e == idx, float("-inf"), choice)
    if RENORM:
        wsel = wsel / tl.maximum(tl.sum(wsel, axis=0), 1e-20)
    wsel = wsel * scaling
    tl.store(w_ptr + t * K + j, wsel, mask=j < K)
    tl.store(ids_ptr + t * K + j, isel, mask=j < K)


def route(logits: torch.Tensor, top_k: int, *, scoring: str = "softmax", renormalize: bool = True,
          correction_bias: torch.Tensor | None = None, routed_scaling: float = 1.0):
    """(weights float32 [T, k], ids int32 [T, k]) as core.ops.moe.moe_route computes them."""
    T, E = logits.shape
    w = torch.empty(T, top_k, dtype=torch.float32, device=logits.device)
    ids = torch.empty(T, top_k, dtype=torch.int32, device=logits.device)
    if T == 0:
        return w, ids
    logits = logits if logits.stride(-1) == 1 else logits.contiguous()
    bias = correction_bias if correction_bias is not None else logits
    block_e = next_pow2(E)
    _route_kernel[(T,)](logits, bias, w, ids, E, logits.stride(0), float(routed_scaling),
                        K=top_k, K_PAD=next_pow2(top_k), BLOCK_E=block_e, SOFTMAX=scoring == "softmax",
                        RENORM=bool(renormalize), HAS_BIAS=correction_bias is not None,
                        num_warps=4 if block_e >= 256 else 1)
    return w, ids
