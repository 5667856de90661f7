"""Writing this step's keys/values into the paged cache (any layout, via strides),
skipping negative slots, optionally quantizing per (token, head) to int8, fp8 (e4m3)
or int4 (asymmetric, two channels per byte), exactly as core/ops/kv_quant.py defines them.
rotary_store_kv also rotates k (as rotary.py does) before storing it, and q in the same launch."""
import torch
import triton
import triton.language as tl

from halinfer.core.attention import LayerKV

from .act_quant import fp8_codes, int8_codes, int8_scale
from .common import next_pow2, on_interpreter
from .pdl import launch_options, pdl_enter

# The kernels' KV constexpr: how the cache stores a (token, head) vector.
KV_MODES = {None: 0, "int8": 1, "fp8": 2, "int4": 3}

# (num_warps, BLOCK_T) forced for every mode (benchmarks/kernels/bench_store_kv.py); None: store_config's
STORE_OVERRIDE: tuple[int, int] | None = None


@triton.jit
def _round_half_even(y):
    # torch.round's ties-to-even, from floor (the same compiled or interpreted)
    r = tl.floor(y + 0.5)
    return tl.where((r - y == 0.5) & (r - 2.0 * tl.floor(r * 0.5) != 0.0), r - 1.0, r)


@triton.jit
def _load_rot(row, d, m, cs_row, HALF: tl.constexpr, IS_NEOX: tl.constexpr, ROPE: tl.constexpr):
    """A [tokens, heads, channels] tile of row + d; with ROPE its first 2 HALF channels rotated by
    the cos | sin rows at cs_row (rotary.py's arithmetic: float32, then the tile's dtype)."""
    x = tl.load(row + d, mask=m, other=0.0)
    if ROPE:
        if IS_NEOX:
            first = d < HALF
            j = tl.where(first, d, d - HALF)
            partner = tl.where(first, d + HALF, d - HALF)
        else:
            first = d % 2 == 0
            j = d // 2
            partner = tl.where(first, d + 1, d - 1)
        rot = m & (d < 2 * HALF)
        xp = tl.load(row + partner, mask=rot, other=0.0).to(tl.float32)
        cos = tl.load(cs_row + j, mask=rot, other=1.0)
        sin = tl.load(cs_row + HALF + j, mask=rot, other=0.0)
        xf = x.to(tl.float32)
        y = tl.where(first, xf * cos - xp * sin, xf * cos + xp * sin)
        x = tl.where(rot, y, xf).to(x.dtype)
    return x


@triton.jit
def _put(src, stride_st, stride_sh, dst, stride_cb, stride_ct, stride_ch, sc_ptr, z_ptr,
         stride_sb, stride_stt, stride_shh, t3, h3, blk, off, th_mask, cs_row,
         D: tl.constexpr, BLOCK_D: tl.constexpr, MODE: tl.constexpr, HALF: tl.constexpr = 1,
         IS_NEOX: tl.constexpr = True, ROPE: tl.constexpr = False):
    """One of k / v: [tokens, heads, channels] from src into the cache (and its scales / zeros);
    ROPE: rotated first (_load_rot)."""
    row = src + t3 * stride_st + h3 * stride_sh
    drow = dst + blk * stride_cb + off * stride_ct + h3 * stride_ch
    srow = blk * stride_sb + off * stride_stt + h3 * stride_shh          # [T, H, 1]
    if MODE == 3:
        # Each channel pair meets in one lane for packing: one contiguous load, split into even and
        # odd channels in registers (H200, bench_store_kv.py: 25-33% faster than two strided loads,
        # e.g. 9.24 -> 7.13 us at 1,024 tokens).
        j = tl.arange(0, BLOCK_D // 2)[None, None, :]
        m = th_mask & (2 * j < D)
        dd = tl.arange(0, BLOCK_D)[None, None, :]
        x = _load_rot(row, dd, th_mask & (dd < D), cs_row, HALF, IS_NEOX, ROPE).to(tl.float32)
        xe, xo = tl.split(tl.reshape(x, (x.shape[0], x.shape[1], BLOCK_D // 2, 2)))
        lo = tl.minimum(tl.min(tl.where(m, xe, float("inf")), axis=2), tl.min(tl.where(m, xo, float("inf")), axis=2))
        hi = tl.maximum(tl.max(tl.where(m, xe, float("-inf")), axis=2),
                        tl.max(tl.where(m, xo, float("-inf")), axis=2))
        ok = tl.max(m.to(tl.int32), axis=2) > 0
        lo = tl.where(ok, lo, 0.0)        # rows not stored: keep them finite
        hi = tl.where(ok, hi, 0.0)
        s = tl.maximum(tl.math.div_rn(hi - lo, tl.full(lo.shape, 15.0, tl.float32)), 1e-8)
        qe = tl.minimum(tl.maximum(_round_half_even(tl.math.div_rn(xe - lo[:, :, None], s[:, :, None])), 0.0), 15.0)
        qo = tl.minimum(tl.maximum(_round_half_even(tl.math.div_rn(xo - lo[:, :, None], s[:, :, None])), 0.0), 15.0)
        byte = qe.to(tl.int32) | (qo.to(tl.int32) << 4)
        tl.store(drow + j, byte.to(tl.uint8), mask=m)
        tl.store(sc_ptr + srow, s[:, :, None], mask=th_mask)
        tl.store(z_ptr + srow, lo[:, :, None], mask=th_mask)
    else:
        d = tl.arange(0, BLOCK_D)[None, None, :]
        m = th_mask & (d < D)
        x = _load_rot(row, d, m, cs_row, HALF, IS_NEOX, ROPE)
        if MODE == 0:
            tl.store(drow + d, x.to(dst.dtype.element_ty), mask=m)
        else:
            xf = x.to(tl.float32)
            amax = tl.maximum(tl.max(tl.abs(xf), axis=2), 1e-8)
            # act_quant's helpers: IEEE divisions as torch's (a plain / compiles to an approximate
            # one, and bf16 inputs often sit exactly on a rounding tie that a scale one ulp off breaks)
            if MODE == 1:
                scale = int8_scale(amax)
                tl.store(drow + d, int8_codes(xf, scale[:, :, None]), mask=m)
            else:
                scale = tl.math.div_rn(amax, 448.0)
                tl.store(drow + d, fp8_codes(xf, scale[:, :, None]), mask=m)   # bytes: dst is a uint8 view
            tl.store(sc_ptr + srow, scale[:, :, None], mask=th_mask)


@triton.jit
def _store_kv_kernel(k_ptr, v_ptr, kc_ptr, vc_ptr, ks_ptr, vs_ptr, kz_ptr, vz_ptr, slot_ptr, T, HK,
                     stride_kt, stride_kh, stride_vt, stride_vh,
                     stride_kcb, stride_kct, stride_kch, stride_vcb, stride_vct, stride_vch,
                     stride_ksb, stride_kst, stride_ksh, stride_vsb, stride_vst, stride_vsh,
                     q_ptr, qo_ptr, pos_ptr, cs_ptr, stride_qt, stride_qh, stride_qot, stride_qoh, stride_cs,
                     HQ, KBLOCKS,
                     D: tl.constexpr, DV: tl.constexpr, BS: tl.constexpr, BLOCK_T: tl.constexpr,
                     BLOCK_H: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
                     HAS_V: tl.constexpr, MODE: tl.constexpr, ROPE: tl.constexpr = False, HALF: tl.constexpr = 1,
                     IS_NEOX: tl.constexpr = True, BLOCK_HQ: tl.constexpr = 1, USE_PDL: tl.constexpr = False):
    # Tiles are [tokens, heads, channels]; BLOCK_T is 1 on GPUs (one token per program).  With ROPE,
    # head blocks [0, KBLOCKS) store k (rotated) and v, the rest rotate q into qo.
    pdl_enter(USE_PDL)
    t = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)
    hb = tl.program_id(1)
    t3 = t.to(tl.int64)[:, None, None]
    cs_row = cs_ptr
    if ROPE:
        pos = tl.load(pos_ptr + t, mask=t < T, other=0).to(tl.int64)[:, None, None]
        cs_row = cs_ptr + pos * stride_cs
    if hb < KBLOCKS:
        h = hb * BLOCK_H + tl.arange(0, BLOCK_H)
        slot = tl.load(slot_ptr + t, mask=t < T, other=-1)
        tmask = slot >= 0              # negative slot: graph padding, nothing to store
        slot = tl.where(tmask, slot, 0)
        blk = (slot // BS).to(tl.int64)[:, None, None]
        off = (slot % BS)[:, None, None]
        h3 = h[None, :, None]
        th_mask = tmask[:, None, None] & (h3 < HK)
        _put(k_ptr, stride_kt, stride_kh, kc_ptr, stride_kcb, stride_kct, stride_kch, ks_ptr, kz_ptr,
             stride_ksb, stride_kst, stride_ksh, t3, h3, blk, off, th_mask, cs_row, D, BLOCK_D, MODE,
             HALF, IS_NEOX, ROPE)
        if HAS_V:
            _put(v_ptr, stride_vt, stride_vh, vc_ptr, stride_vcb, stride_vct, stride_vch, vs_ptr, vz_ptr,
                 stride_vsb, stride_vst, stride_vsh, t3, h3, blk, off, th_mask, cs_row, DV, BLOCK_DV, MODE)
    elif ROPE:
        # (names of their own: a compiled if / else may not give one name two types)
        hq3 = ((hb - KBLOCKS) * BLOCK_HQ + tl.arange(0, BLOCK_HQ))[None, :, None]
        dq = tl.arange(0, BLOCK_D)[None, None, :]
        mq = (t3 < T) & (hq3 < HQ) & (dq < D)
        xq = _load_rot(q_ptr + t3 * stride_qt + hq3 * stride_qh, dq, mq, cs_row, HALF, IS_NEOX, ROPE)
        tl.store(qo_ptr + t3 * stride_qot + hq3 * stride_qoh + dq, xq, mask=mq)


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


def check_zeros(scales: torch.Tensor | None, zeros: torch.Tensor | None) -> None:
    # The kernels index an int4 cache's zeros with its scales' strides.
    if zeros is not None:
        assert zeros.shape == scales.shape and zeros.stride() == scales.stride(), \
            f"int4 KV zeros {tuple(zeros.shape)}/{zeros.stride()} laid out unlike their scales " \
            f"{tuple(scales.shape)}/{scales.stride()}"


def store_config(mode: int, T: int, block_h: int, block_d: int, interp: bool) -> tuple[int, int]:
    """(num_warps, BLOCK_T).  GPUs: a token a program, 4 warps; a quantized cache takes 8 below 256
    tokens (H200, bench_store_kv.py at 8 kv heads x 128, 2026-12-02: int8 / fp8 3.0 -> 2.8 us at
    1-64 tokens, int4 3.67 -> 3.26 at 1; within 2% of the sweep's best elsewhere)."""
    if STORE_OVERRIDE:
        return STORE_OVERRIDE
    if interp:
        # The interpreter pays per program: give it many tokens at once.
        return 1, max(1, min(64, 16384 // (block_h * block_d), next_pow2(T)))
    return (8 if mode and T < 256 else 4), 1


def store_kv(k: torch.Tensor, v: torch.Tensor | None, kv: LayerKV, slot_mapping: torch.Tensor) -> None:
    """core.ops.paged.store_kv's contract (in place; negative slots skipped)."""
    _launch(k, v, kv, slot_mapping, None)


def rotary_store_kv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor | None, positions: torch.Tensor,
                    cos_sin_cache: torch.Tensor, is_neox: bool, kv: LayerKV, slot_mapping: torch.Tensor) -> torch.Tensor:
    """core.ops.paged.rotary_store_kv's contract with rotary.py's and store_kv's kernels' arithmetic,
    in one launch: the rotated q (a new tensor)."""
    T, HQ, D = q.shape
    assert k.shape[0] == T and k.shape[2] == D and k.dtype == q.dtype, "q and k: same tokens, head dim and dtype"
    cache = cos_sin_cache if cos_sin_cache.dtype == torch.float32 else cos_sin_cache.float()
    cache = cache if cache.stride(-1) == 1 else cache.contiguous()
    half = cache.shape[-1] // 2
    assert 2 * half <= D, f"rotary dim {2 * half} exceeds head dim {D}"
    q = q if q.stride(-1) == 1 else q.contiguous()
    qo = torch.empty((T, HQ, D), dtype=q.dtype, device=q.device)
    _launch(k, v, kv, slot_mapping, (q, qo, positions, cache, half, bool(is_neox)))
    return qo


def _launch(k, v, kv: LayerKV, slot_mapping, rope) -> None:
    interp = on_interpreter(k)
    T, HK, D = k.shape
    has_v = kv.v is not None and v is not None
    if k.stride(-1) != 1:
        k = k.contiguous()
    if has_v and v.stride(-1) != 1:
        v = v.contiguous()
    DV = v.shape[-1] if has_v else 1
    vv, vc = (v, kv.v) if has_v else (k, kv.k)            # placeholders when there are no values
    mode = KV_MODES[kv.quant]
    kc = kv.k.view(torch.uint8) if mode == 2 else kv.k     # fp8 is written as the bytes fp8_codes makes
    vc = vc.view(torch.uint8) if mode == 2 else vc
    ks = kv.k_scale if mode else kv.k
    vs = (kv.v_scale if has_v else kv.k_scale) if mode else kv.k
    kz = kv.k_zero if mode == 3 else ks
    vz = (kv.v_zero if has_v else kv.k_zero) if mode == 3 else vs
    check_zeros(kv.k_scale, kv.k_zero)
    if has_v:
        check_zeros(kv.v_scale, kv.v_zero)
    block_d = next_pow2(max(D, DV))
    block_h = max(1, min(next_pow2(HK), 4096 // block_d))
    kblocks = -(-HK // block_h)
    if rope is None:
        q = qo = k
        pos, cs, half, neox, hq, block_hq, qblocks = slot_mapping, k, 1, True, 0, 1, 0
    else:
        q, qo, pos, cs, half, neox = rope
        hq = q.shape[1]
        block_hq = max(1, min(next_pow2(hq), 4096 // block_d))
        qblocks = -(-hq // block_hq)
    warps, block_t = store_config(mode, T, max(block_h, block_hq), block_d, interp)
    if T == 0:
        return
    _store_kv_kernel[(-(-T // block_t), kblocks + qblocks)](
        k, vv, kc, vc, ks, vs, kz, vz, slot_mapping, T, HK,
        k.stride(0), k.stride(1), vv.stride(0), vv.stride(1),
        *cache_strides(kv, kv.k), *cache_strides(kv, vc),
        *scale_strides(kv, kv.k_scale), *scale_strides(kv, kv.v_scale if has_v else kv.k_scale),
        q, qo, pos, cs, q.stride(0), q.stride(1), qo.stride(0), qo.stride(1), cs.stride(0), hq, kblocks,
        D=D, DV=DV, BS=kv.block_size, BLOCK_T=block_t, BLOCK_H=block_h,
        BLOCK_D=max(2, next_pow2(D)), BLOCK_DV=max(2, next_pow2(DV)),
        HAS_V=has_v, MODE=mode, ROPE=rope is not None, HALF=half, IS_NEOX=neox, BLOCK_HQ=block_hq,
        num_warps=warps, **launch_options(k))
