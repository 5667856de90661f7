"""Device functions shared by the kernels (inlined by Triton into each caller)."""
import os

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


# int4 tiles.  Magic (the default): each byte is loaded once, split into its two nibbles and, for
# 16-bit queries, turned into floats by bit pattern, with no int->float conversion (I2F issues at
# a fraction of the FMA rate on Hopper, and the old tile's code spilled registers: sm_90 SASS of
# the decode kernel at head dim 128); the bias that leaves in every element is taken off through
# the zero term.  Two tiles do that: KV_INT4_WORDS (16-bit queries,
# head dims a multiple of 8, 4-byte aligned rows: four bytes per int32 and two nibbles per integer
# op) and KV_INT4 (any even head dim and dtype: a byte per lane).  KV_INT4_PLAIN is the tile from
# before (two lanes per byte, a conversion per element), kept so they can be timed against each
# other (benchmarks/kernels/bench_decode.py --kv int4,int4-bytes,int4-plain).  The launchers pick
# through attention_args.AttnArgs.kernel_kv_mode at each launch, from INT4_MAGIC and INT4_WORDS;
# HALINFER_INT4_MAGIC=0 / HALINFER_INT4_WORDS=0 set them off for a whole process.
INT4_MAGIC = os.environ.get("HALINFER_INT4_MAGIC", "1") != "0"
INT4_WORDS = os.environ.get("HALINFER_INT4_WORDS", "1") != "0"
KV_INT4 = 3            # store_kv.KV_MODES["int4"]
KV_INT4_PLAIN = 4
KV_INT4_WORDS = 5

# A nibble c (0..15) put in the top four mantissa bits of 16.0 gives the float 16 + c exactly
# (16..31 is one binade with a step of 1): fp16 16.0 = 0x4C00 (10 mantissa bits, c << 6), bf16
# 16.0 = 0x4180 (7 bits, c << 3).  16 is the smallest bias that holds 0..15 so; a larger one
# (0x6400 = 1024 + c in fp16, no shift) would work too, but the dots would then sum terms up to
# 64 times larger, and their fp32 rounding with them, before the bias is taken off again.
INT4_BIAS = tl.constexpr(16.0)
F16_MAGIC = tl.constexpr(0x4C00)
F16_SHIFT = tl.constexpr(6)
F16_KEEP = tl.constexpr(15 << 6)          # the nibble's bits
BF16_MAGIC = tl.constexpr(0x4180)
BF16_SHIFT = tl.constexpr(3)
BF16_KEEP = tl.constexpr(15 << 3)


@triton.jit
def _shl(x, s: tl.constexpr):
    """x << s, or x >> -s for s < 0."""
    if s >= 0:
        y = x << s
    else:
        y = x >> (-s)
    return y


@triton.jit
def _int4_tile(ptr, rows, ch, nmask, NCH: tl.constexpr, dtype: tl.constexpr):
    """[BLOCK_N, C] nibbles from [BLOCK_N, C / 2] bytes, each byte loaded once: channel 2j is
    byte j's low nibble, 2j + 1 its high one (store_kv.py, core/ops/kv_quant.py).  ch must be
    tl.arange(0, C); the bytes holding channels < NCH are read (an odd NCH, an MLA value width,
    reads one channel more, from inside the row), the rest read as nibbles 0.
    fp16 / bf16: INT4_BIAS + c, by bit pattern (see F16_MAGIC); other dtypes: c, converted."""
    C: tl.constexpr = ch.shape[0]
    N: tl.constexpr = rows.shape[0]
    j = tl.arange(0, C // 2)
    # The byte mask from constexprs (not from a channel mask), so the load stays vectorized.
    bmask = nmask[:, None] & (j < (NCH + 1) // 2)[None, :]
    # uint8 -> int16 zero-extends: no sign bits come down with the high nibble.
    b = tl.load(ptr + rows[:, None] + j[None, :], mask=bmask, other=0).to(tl.int16)
    if dtype.primitive_bitwidth == 16:
        if dtype == tl.float16:
            SH: tl.constexpr = F16_SHIFT
            KEEP: tl.constexpr = F16_KEEP
            MAGIC: tl.constexpr = F16_MAGIC
        else:
            SH: tl.constexpr = BF16_SHIFT
            KEEP: tl.constexpr = BF16_KEEP
            MAGIC: tl.constexpr = BF16_MAGIC
        lo = ((b << SH) & KEEP) | MAGIC
        hi = (_shl(b, SH - 4) & KEEP) | MAGIC
        t = tl.reshape(tl.join(lo, hi), [N, C]).to(dtype, bitcast=True)
    else:
        t = tl.reshape(tl.join(b & 15, b >> 4), [N, C]).to(dtype)
    return t


@triton.jit
def _int4_tile_words(ptr, rows, ch, nmask, NCH: tl.constexpr, dtype: tl.constexpr):
    """_int4_tile for fp16 / bf16 from int32 words: rows and ptr 4-byte aligned, NCH a multiple
    of 8.  A word holds channels 8m .. 8m + 7 (nibble i at bits 4i); shifted by SH - 4k and
    masked, it has channels 8m + k and 8m + 4 + k in the top mantissa bits of its two 16-bit
    halves, so each integer op makes two elements.  The halves are then put in channel order."""
    tl.static_assert(dtype.primitive_bitwidth == 16, "the int4 word tile is for fp16 / bf16")
    tl.static_assert(NCH % 8 == 0, "the int4 word tile reads whole words")
    C: tl.constexpr = ch.shape[0]
    N: tl.constexpr = rows.shape[0]
    m = tl.arange(0, C // 8)
    wmask = nmask[:, None] & (m < NCH // 8)[None, :]
    w = tl.load(ptr.to(tl.pointer_type(tl.int32)) + (rows // 4)[:, None] + m[None, :], mask=wmask, other=0)
    if dtype == tl.float16:
        SH: tl.constexpr = F16_SHIFT
        KEEP2: tl.constexpr = F16_KEEP * 0x10001      # in both halves
        MAGIC2: tl.constexpr = F16_MAGIC * 0x10001
    else:
        SH: tl.constexpr = BF16_SHIFT
        KEEP2: tl.constexpr = BF16_KEEP * 0x10001
        MAGIC2: tl.constexpr = BF16_MAGIC * 0x10001
    # (>> is arithmetic on int32: the sign bits it brings in are masked off.)
    p0 = (_shl(w, SH) & KEEP2) | MAGIC2
    p1 = (_shl(w, SH - 4) & KEEP2) | MAGIC2
    p2 = (_shl(w, SH - 8) & KEEP2) | MAGIC2
    p3 = (_shl(w, SH - 12) & KEEP2) | MAGIC2
    # u_k [.., 2]: channels (8m + k, 8m + 4 + k); channel 8m + 4a + 2b + c is u_{2b + c}[a].
    u0 = tl.join(p0.to(tl.int16), (p0 >> 16).to(tl.int16))
    u1 = tl.join(p1.to(tl.int16), (p1 >> 16).to(tl.int16))
    u2 = tl.join(p2.to(tl.int16), (p2 >> 16).to(tl.int16))
    u3 = tl.join(p3.to(tl.int16), (p3 >> 16).to(tl.int16))
    t = tl.join(tl.join(u0, u2), tl.join(u1, u3))    # [.., a, b, c]
    return tl.reshape(t, [N, C]).to(dtype, bitcast=True)


@triton.jit
def _load_tile(ptr, rows, ch, nmask, NCH: tl.constexpr, KV: tl.constexpr, dtype: tl.constexpr):
    """rows [BLOCK_N] offsets of (token, head) vectors (nmask: which are read), ch [C] channels
    (those < NCH are read) -> a [BLOCK_N, C] tile in ``dtype``.  int4: the nibbles (KV 3 / 5 with
    fp16 / bf16: plus INT4_BIAS), masked bytes read as nibble 0; int8 / fp8: the stored values,
    zero where masked.  All exact in fp16 / bf16.  Scales and zeros are applied by the callers."""
    mask = nmask[:, None] & (ch < NCH)[None, :]
    if KV == 3:
        t = _int4_tile(ptr, rows, ch, nmask, NCH, dtype)
    elif KV == 5:
        t = _int4_tile_words(ptr, rows, ch, nmask, NCH, dtype)
    elif KV == 4:   # KV_INT4_PLAIN: the previous int4 tile, for timing against the above
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
def key_scores(q, qsum, k_ptr, ks_ptr, kz_ptr, blk, tok, kvh, nmask, d, D: tl.constexpr,
               stride_kb, stride_kt, stride_kh, stride_ksb, stride_kst, stride_ksh,
               scale, soft_cap, KV: tl.constexpr, SOFTCAP: tl.constexpr, PREC: tl.constexpr):
    """Paged attention: q [rows, BLOCK_D] against one tile of cached keys -> scaled
    (and soft-capped) scores [rows, BLOCK_N]; blk/tok: each key's block and slot; d: tl.arange of
    BLOCK_D, D: the head dim (channels read).
    KV: 0 model dtype, 1 int8, 2 fp8, 3 / 4 / 5 int4 (KV_INT4, KV_INT4_PLAIN, KV_INT4_WORDS; qsum: q's
    row sums, for int4 zeros)."""
    k = _load_tile(k_ptr, blk * stride_kb + tok * stride_kt + kvh * stride_kh, d, nmask, D, KV, q.dtype)
    sc = tl.dot(q, tl.trans(k), input_precision=PREC)
    if KV != 0:
        # Apply the per-key scale to the scores, not the keys: q . (c s + z) = s (q . c) + z sum(q).
        srow = blk * stride_ksb + tok * stride_kst + kvh * stride_ksh
        ksc = tl.load(ks_ptr + srow, mask=nmask, other=0.0)
        sc = sc * ksc[None, :]
        if KV >= 3:   # int4
            kz = tl.load(kz_ptr + srow, mask=nmask, other=0.0)
            if KV != 4 and q.dtype.primitive_bitwidth == 16:
                # The tile holds c + bias: q . (c s + z) = s (q . (c + bias)) + (z - bias s) sum(q).
                # qsum is summed from the same 16-bit q the dot reads, so the bias cancels in fp32.
                kz = kz - INT4_BIAS * ksc
            sc = sc + qsum[:, None] * kz[None, :]
    sc = sc * scale
    if SOFTCAP:
        sc = soft_cap * tanh(sc / soft_cap)
    return sc


@triton.jit
def weighted_values(q, p, v_ptr, vs_ptr, vz_ptr, blk, tok, kvh, nmask, dv, DV: tl.constexpr,
                    stride_vb, stride_vt, stride_vh, stride_vsb, stride_vst, stride_vsh,
                    KV: tl.constexpr, PREC: tl.constexpr):
    """Paged attention: probabilities p [rows, BLOCK_N] times one tile of cached values -> [rows, BLOCK_DV]
    (dv: tl.arange of BLOCK_DV, DV: the value width; columns from DV on are not meaningful)."""
    v = _load_tile(v_ptr, blk * stride_vb + tok * stride_vt + kvh * stride_vh, dv, nmask, DV, KV, q.dtype)
    pw = p
    if KV != 0:
        # p (c s + z) = (p s) c + sum(p z): scales folded into p, zeros added per row.
        srow = blk * stride_vsb + tok * stride_vst + kvh * stride_vsh
        vsc = tl.load(vs_ptr + srow, mask=nmask, other=0.0)
        pw = p * vsc[None, :]
    pw = pw.to(q.dtype)
    out = tl.dot(pw, v, input_precision=PREC)
    if KV >= 3:   # int4
        vz = tl.load(vz_ptr + srow, mask=nmask, other=0.0)
        zt = tl.sum(p * vz[None, :], axis=1)
        if KV != 4 and q.dtype.primitive_bitwidth == 16:
            # The tile holds c + bias: the dot added bias * sum(pw) per row.  Taken off with the
            # 16-bit pw the dot read (not p s in fp32), or pw's rounding would come back times bias.
            zt = zt - INT4_BIAS * tl.sum(pw.to(tl.float32), axis=1)
        out = out + zt[:, None]
    return out
