"""Writing this step's keys/values into the paged cache (any layout, via strides),
skipping negative slots, optionally quantizing to int8 per (token, head)."""
import torch
import triton
import triton.language as tl

from halinfer.core.attention import LayerKV

from .common import next_pow2, on_interpreter


@triton.jit
def _store_kv_kernel(k_ptr, v_ptr, kc_ptr, vc_ptr, ks_ptr, vs_ptr, slot_ptr, T, HK,
                     stride_kt, stride_kh, stride_vt, stride_vh,
                     stride_kcb, stride_kct, stride_kch, stride_vcb, stride_vct, stride_vch,
                     stride_ksb, stride_kst, stride_ksh, stride_vsb, stride_vst, stride_vsh,
                     D: tl.constexpr, DV: tl.constexpr, BS: tl.constexpr, BLOCK_T: tl.constexpr,
                     BLOCK_H: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
                     HAS_V: tl.constexpr, QUANT: tl.constexpr):
    # Tiles are [tokens, heads, channels]; BLOCK_T is 1 on GPUs (one token per program).
    t = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)
    h = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    slot = tl.load(slot_ptr + t, mask=t < T, other=-1)
    tmask = slot >= 0              # negative slot: graph padding, nothing to store
    slot = tl.where(tmask, slot, 0)
    blk = (slot // BS).to(tl.int64)[:, None, None]
    off = (slot % BS)[:, None, None]
    t3 = t.to(tl.int64)[:, None, None]
    h3 = h[None, :, None]
    th_mask = tmask[:, None, None] & (h3 < HK)
    d = tl.arange(0, BLOCK_D)[None, None, :]
    mask = th_mask & (d < D)
    x = tl.load(k_ptr + t3 * stride_kt + h3 * stride_kh + d, mask=mask, other=0.0)
    dst = kc_ptr + blk * stride_kcb + off * stride_kct + h3 * stride_kch + d
    if QUANT:
        xf = x.to(tl.float32)
        scale = tl.maximum(tl.max(tl.abs(xf), axis=2), 1e-8) / 127.0
        y = tl.math.div_rn(xf, scale[:, :, None])
        r = tl.floor(y + 0.5)
        # round half to even, as torch.round does
        r = tl.where((r - y == 0.5) & (r - 2.0 * tl.floor(r * 0.5) != 0.0), r - 1.0, r)
        r = tl.minimum(tl.maximum(r, -128.0), 127.0)
        tl.store(dst, r.to(tl.int8), mask=mask)
        sdst = ks_ptr + blk * stride_ksb + off * stride_kst + h3 * stride_ksh
        tl.store(sdst, scale[:, :, None], mask=th_mask)
    else:
        tl.store(dst, x.to(kc_ptr.dtype.element_ty), mask=mask)
    if HAS_V:
        e = tl.arange(0, BLOCK_DV)[None, None, :]
        vmask = th_mask & (e < DV)
        xv = tl.load(v_ptr + t3 * stride_vt + h3 * stride_vh + e, mask=vmask, other=0.0)
        vdst = vc_ptr + blk * stride_vcb + off * stride_vct + h3 * stride_vch + e
        if QUANT:
            vf = xv.to(tl.float32)
            vscale = tl.maximum(tl.max(tl.abs(vf), axis=2), 1e-8) / 127.0
            yv = tl.math.div_rn(vf, vscale[:, :, None])
            rv = tl.floor(yv + 0.5)
            rv = tl.where((rv - yv == 0.5) & (rv - 2.0 * tl.floor(rv * 0.5) != 0.0), rv - 1.0, rv)
            rv = tl.minimum(tl.maximum(rv, -128.0), 127.0)
            tl.store(vdst, rv.to(tl.int8), mask=vmask)
            tl.store(vs_ptr + blk * stride_vsb + off * stride_vst + h3 * stride_vsh, vscale[:, :, None],
                     mask=th_mask)
        else:
            tl.store(vdst, xv.to(vc_ptr.dtype.element_ty), mask=vmask)


def cache_strides(kv: LayerKV, cache: torch.Tensor) -> tuple[int, int, int]:
    """(block, token, head) strides of a cache tensor in either layout."""
    if kv.layout == "NHD":
        return cache.stride(0), cache.stride(1), cache.stride(2)
    return cache.stride(0), cache.stride(2), cache.stride(1)


def scale_strides(kv: LayerKV, scales: torch.Tensor | None) -> tuple[int, int, int]:
    if scales is None:
        return 0, 0, 0
    if kv.layout == "NHD":
        return scales.stride(0), scales.stride(1), scales.stride(2)
    return scales.stride(0), scales.stride(2), scales.stride(1)


def store_kv(k: torch.Tensor, v: torch.Tensor | None, kv: LayerKV, slot_mapping: torch.Tensor) -> None:
    """core.ops.paged.store_kv's contract (in place; negative slots skipped)."""
    interp = on_interpreter(k)
    T, HK, D = k.shape
    has_v = kv.v is not None and v is not None
    if k.stride(-1) != 1:
        k = k.contiguous()
    if has_v and v.stride(-1) != 1:
        v = v.contiguous()
    DV = v.shape[-1] if has_v else 1
    vv, vc = (v, kv.v) if has_v else (k, kv.k)            # placeholders when there are no values
    quant = kv.quantized
    ks = kv.k_scale if quant else kv.k
    vs = (kv.v_scale if has_v else kv.k_scale) if quant else kv.k
    block_d = next_pow2(max(D, DV))
    block_h = max(1, min(next_pow2(HK), 4096 // block_d))
    # The interpreter pays per program: give it many tokens at once.
    block_t = max(1, min(64, 16384 // (block_h * block_d), next_pow2(T))) if interp else 1
    if T == 0:
        return
    _store_kv_kernel[(-(-T // block_t), -(-HK // block_h))](
        k, vv, kv.k, vc, ks, vs, slot_mapping, T, HK,
        k.stride(0), k.stride(1), vv.stride(0), vv.stride(1),
        *cache_strides(kv, kv.k), *cache_strides(kv, vc),
        *scale_strides(kv, kv.k_scale), *scale_strides(kv, kv.v_scale if has_v else kv.k_scale),
        D=D, DV=DV, BS=kv.block_size, BLOCK_T=block_t, BLOCK_H=block_h, BLOCK_D=next_pow2(D), BLOCK_DV=next_pow2(DV),
        HAS_V=has_v, QUANT=quant, num_warps=4)
