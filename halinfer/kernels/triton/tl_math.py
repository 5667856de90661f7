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
def key_scores(q, k_ptr, ks_ptr, blk, tok, kvh, nmask, d, dmask,
               stride_kb, stride_kt, stride_kh, stride_ksb, stride_kst, stride_ksh,
               scale, soft_cap, KV_INT8: tl.constexpr, SOFTCAP: tl.constexpr, PREC: tl.constexpr):
    """Paged attention: q [rows, BLOCK_D] against one tile of cached keys -> scaled
    (and soft-capped) scores [rows, BLOCK_N]; blk/tok: each key's block and slot."""
    k = tl.load(k_ptr + (blk * stride_kb + tok * stride_kt + kvh * stride_kh)[:, None] + d[None, :],
                mask=nmask[:, None] & dmask[None, :], other=0.0)
    sc = tl.dot(q, tl.trans(k.to(q.dtype)), input_precision=PREC)
    if KV_INT8:
        # int8 values are exact in fp16/bf16: apply the per-key scale to the scores instead.
        ksc = tl.load(ks_ptr + blk * stride_ksb + tok * stride_kst + kvh * stride_ksh, mask=nmask, other=0.0)
        sc = sc * ksc[None, :]
    sc = sc * scale
    if SOFTCAP:
        sc = soft_cap * tanh(sc / soft_cap)
    return sc


@triton.jit
def weighted_values(q, p, v_ptr, vs_ptr, blk, tok, kvh, nmask, dv, dvmask,
                    stride_vb, stride_vt, stride_vh, stride_vsb, stride_vst, stride_vsh,
                    KV_INT8: tl.constexpr, PREC: tl.constexpr):
    """Paged attention: probabilities p [rows, BLOCK_N] times one tile of cached values -> [rows, BLOCK_DV]."""
    v = tl.load(v_ptr + (blk * stride_vb + tok * stride_vt + kvh * stride_vh)[:, None] + dv[None, :],
                mask=nmask[:, None] & dvmask[None, :], other=0.0)
    if KV_INT8:
        vsc = tl.load(vs_ptr + blk * stride_vsb + tok * stride_vst + kvh * stride_vsh, mask=nmask, other=0.0)
        p = p * vsc[None, :]
    return tl.dot(p.to(q.dtype), v.to(q.dtype), input_precision=PREC)
