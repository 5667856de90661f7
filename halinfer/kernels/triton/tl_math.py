"""Device functions shared by the kernels (inlined by Triton into each caller)."""
import triton
import triton.language as tl


@triton.jit
def tanh(z):
    # Through exp of -2|z|, stable for large |z|, and the same compiled or interpreted.
    e = tl.exp(-2.0 * tl.abs(z))
    th = (1.0 - e) / (1.0 + e)
    return tl.where(z < 0, -th, th)


@triton.jit
def gelu_tanh(g):
    return 0.5 * g * (1.0 + tanh(0.7978845608028654 * (g + 0.044715 * g * g * g)))


@triton.jit
def _load_tile(ptr, rows, ch, mask, KV: tl.constexpr, dtype: tl.constexpr):
    """rows [BLOCK_N] offsets of (token, head) vectors, ch [C] channels -> a [BLOCK_N, C] tile in
    ``dtype``, zero where masked.  int4 returns the raw nibbles 0..15 (exact in fp16/bf16);
    int8 / fp8 the stored values (exact too); scales and zeros are applied by the callers."""
    if KV == 3:
        b = tl.load(ptr + rows[:, None] + (ch // 2)[None, :], mask=mask, other=0).to(tl.int32)
        t = ((b >> ((ch % 2) * 4)[None, :]) & 15).to(dtype)
    elif KV == 2:
        # fp8: loaded without ``other`` (an int/float constant cast to fp8 is not supported on
        # every triton), masked lanes zeroed after the upcast so no garbage reaches the dot.
        t = tl.where(mask, tl.load(ptr + rows[:, None] + ch[None, :], mask=mask).to(dtype), 0.0)
    else:
        t = tl.load(ptr + rows[:, None] + ch[None, :], mask=mask, other=0.0).to(dtype)
    return t


@triton.jit
def key_scores(q, qsum, k_ptr, ks_ptr, kz_ptr, blk, tok, kvh, nmask, d, dmask,
               stride_kb, stride_kt, stride_kh, stride_ksb, stride_kst, stride_ksh,
               scale, soft_cap, KV: tl.constexpr, SOFTCAP: tl.constexpr, PREC: tl.constexpr):
    """Paged attention: q [rows, BLOCK_D] against one tile of cached keys -> scaled
    (and soft-capped) scores [rows, BLOCK_N]; blk/tok: each key's block and slot.
    KV: 0 model dtype, 1 int8, 2 fp8, 3 int4 (qsum: q's row sums, for int4 zeros)."""
    k = _load_tile(k_ptr, blk * stride_kb + tok * stride_kt + kvh * stride_kh, d,
                   nmask[:, None] & dmask[None, :], KV, q.dtype)
    sc = tl.dot(q, tl.trans(k), input_precision=PREC)
    if KV != 0:
        # Apply the per-key scale to the scores, not the keys: q . (c s + z) = s (q . c) + z sum(q).
        srow = blk * stride_ksb + tok * stride_kst + kvh * stride_ksh
        ksc = tl.load(ks_ptr + srow, mask=nmask, other=0.0)
        sc = sc * ksc[None, :]
        if KV == 3:
            kz = tl.load(kz_ptr + srow, mask=nmask, other=0.0)
            sc = sc + qsum[:, None] * kz[None, :]
    sc = sc * scale
    if SOFTCAP:
        sc = soft_cap * tanh(sc / soft_cap)
    return sc


@triton.jit
def weighted_values(q, p, v_ptr, vs_ptr, vz_ptr, blk, tok, kvh, nmask, dv, dvmask,
                    stride_vb, stride_vt, stride_vh, stride_vsb, stride_vst, stride_vsh,
                    KV: tl.constexpr, PREC: tl.constexpr):
    """Paged attention: probabilities p [rows, BLOCK_N] times one tile of cached values -> [rows, BLOCK_DV]."""
    v = _load_tile(v_ptr, blk * stride_vb + tok * stride_vt + kvh * stride_vh, dv,
                   nmask[:, None] & dvmask[None, :], KV, q.dtype)
    pw = p
    if KV != 0:
        # p (c s + z) = (p s) c + sum(p z): scales folded into p, zeros added per row.
        srow = blk * stride_vsb + tok * stride_vst + kvh * stride_vsh
        vsc = tl.load(vs_ptr + srow, mask=nmask, other=0.0)
        pw = p * vsc[None, :]
    out = tl.dot(pw.to(q.dtype), v, input_precision=PREC)
    if KV == 3:
        vz = tl.load(vz_ptr + srow, mask=nmask, other=0.0)
        out = out + tl.sum(p * vz[None, :], axis=1)[:, None]
    return out
