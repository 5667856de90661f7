"""Rotary embedding of q and k: neox (halves) or interleaved (pairs), partial rotary."""
import torch
import triton
import triton.language as tl

from .common import next_pow2, on_interpreter
from .pdl import launch_options, pdl_enter


@triton.jit
def _rotary_kernel(q_ptr, k_ptr, qo_ptr, ko_ptr, pos_ptr, cs_ptr, T,
                   stride_qt, stride_qh, stride_kt, stride_kh, stride_qot, stride_qoh, stride_kot, stride_koh,
                   stride_cs, HQ, HK, QBLOCKS,
                   D: tl.constexpr, HALF: tl.constexpr, IS_NEOX: tl.constexpr, BLOCK_T: tl.constexpr,
                   BLOCK_H: tl.constexpr, BLOCK_HALF: tl.constexpr, BLOCK_PASS: tl.constexpr,
                   USE_PDL: tl.constexpr = False):
    # q and k in one launch (one launch per layer less at decode): head blocks [0, QBLOCKS) are
    # q's, the rest k's.  Tiles are [tokens, heads, pairs]; BLOCK_T is 1 on GPUs.
    pdl_enter(USE_PDL)
    t = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)
    hb = tl.program_id(1)
    if hb < QBLOCKS:
        x_ptr, o_ptr, H = q_ptr, qo_ptr, HQ
        stride_xt, stride_xh, stride_ot, stride_oh = stride_qt, stride_qh, stride_qot, stride_qoh
    else:
        x_ptr, o_ptr, H = k_ptr, ko_ptr, HK
        stride_xt, stride_xh, stride_ot, stride_oh = stride_kt, stride_kh, stride_kot, stride_koh
        hb = hb - QBLOCKS
    h = hb * BLOCK_H + tl.arange(0, BLOCK_H)
    tmask = t < T
    j = tl.arange(0, BLOCK_HALF)[None, None, :]
    jmask = j < HALF
    pos = tl.load(pos_ptr + t, mask=tmask, other=0).to(tl.int64)[:, None, None]
    cos = tl.load(cs_ptr + pos * stride_cs + j, mask=jmask, other=0.0)
    sin = tl.load(cs_ptr + pos * stride_cs + HALF + j, mask=jmask, other=0.0)
    if IS_NEOX:
        i1 = j
        i2 = j + HALF
    else:
        i1 = 2 * j
        i2 = 2 * j + 1
    t3 = t.to(tl.int64)[:, None, None]
    h3 = h[None, :, None]
    th_mask = tmask[:, None, None] & (h3 < H)
    mask = th_mask & jmask
    xrow = x_ptr + t3 * stride_xt + h3 * stride_xh
    orow = o_ptr + t3 * stride_ot + h3 * stride_oh
    x1 = tl.load(xrow + i1, mask=mask, other=0.0).to(tl.float32)
    x2 = tl.load(xrow + i2, mask=mask, other=0.0).to(tl.float32)
    tl.store(orow + i1, (x1 * cos - x2 * sin).to(o_ptr.dtype.element_ty), mask=mask)
    tl.store(orow + i2, (x2 * cos + x1 * sin).to(o_ptr.dtype.element_ty), mask=mask)
    if BLOCK_PASS > 0:
        # Partial rotary: channels past the rotated ones are copied unchanged.
        c = 2 * HALF + tl.arange(0, BLOCK_PASS)[None, None, :]
        cmask = th_mask & (c < D)
        tl.store(orow + c, tl.load(xrow + c, mask=cmask, other=0.0), mask=cmask)


def _rotate(q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor, cache: torch.Tensor, is_neox: bool,
            interp: bool):
    T, HQ, D = q.shape
    HK = k.shape[1]
    assert k.shape[0] == T and k.shape[2] == D and k.dtype == q.dtype, "q and k: same tokens, head dim and dtype"
    qo = torch.empty((T, HQ, D), dtype=q.dtype, device=q.device)
    ko = torch.empty((T, HK, D), dtype=k.dtype, device=k.device)
    q = q if q.stride(-1) == 1 else q.contiguous()
    k = k if k.stride(-1) == 1 else k.contiguous()
    half = cache.shape[-1] // 2
    assert 2 * half <= D, f"rotary dim {2 * half} exceeds head dim {D}"
    block_half = next_pow2(half)
    block_h = max(1, min(next_pow2(max(HQ, HK)), (2048 if not interp else 4096) // block_half))
    npass = D - 2 * half
    block_t = max(1, min(64, 16384 // (block_h * block_half), next_pow2(T))) if interp else 1
    qblocks = -(-HQ // block_h)
    if T and (HQ or HK):
        _rotary_kernel[(-(-T // block_t), qblocks + -(-HK // block_h))](
            q, k, qo, ko, positions, cache, T, q.stride(0), q.stride(1), k.stride(0), k.stride(1),
            qo.stride(0), qo.stride(1), ko.stride(0), ko.stride(1), cache.stride(0), HQ, HK, qblocks,
            D=D, HALF=half, IS_NEOX=bool(is_neox), BLOCK_T=block_t, BLOCK_H=block_h, BLOCK_HALF=block_half,
            BLOCK_PASS=next_pow2(npass) if npass else 0, num_warps=4, **launch_options(q))
    return qo, ko


def rotary(q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor, cos_sin_cache: torch.Tensor,
           is_neox: bool = True):
    """core.ops.rotary.rotary's contract: returns new (q, k)."""
    interp = on_interpreter(q)
    cache = cos_sin_cache if cos_sin_cache.dtype == torch.float32 else cos_sin_cache.float()
    if cache.stride(-1) != 1:
        cache = cache.contiguous()
    return _rotate(q, k, positions, cache, is_neox, interp)
