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
# other (benchmarks/kernels/bench_decode.py --kv int4-words,int4-bytes,int4-plain).  The launchers pick
# through attention_args.AttnArgs.kernel_kv_mode at each launch, from INT4_MAGIC, INT4_WORDS, INT4_SPLIT;
# HALINFER_INT4_MAGIC=0 / HALINFER_INT4_WORDS=0 set them off for a whole process.
INT4_MAGIC = os.environ.get("HALINFER_INT4_MAGIC", "1") != "0"
INT4_WORDS = os.environ.get("HALINFER_INT4_WORDS", "1") != "0"
# Split tiles: the nibbles are never put back in channel order.  The cache's nibble planes are
# each a set of channels (bytes: low nibbles 2j, high 2j + 1; int32 words: 8m + i, i = 0..7, in
# the halves of the four shifted words), so q . k is a sum of one dot per plane against q's
# channels of that set (loaded strided once per program), and p . v gives one accumulator per
# plane, stored to its channels at the end.  INT4_SPLIT = 2 (KV_INT4_SPLIT2, from bytes), 4 / 8
# (KV_INT4_SPLIT4 / 8, from words: a shifted word's two halves side by side, or each alone), each
# falling back to fewer planes where it does not fit (attention_args), 0 (the tiles above), or -1
# (auto, the default: 4 planes where the head dims are >= 128, else the tiles above).  Why auto so,
# from sm_90 SASS of the decode key loop (benchmarks/kernels/int4_sass.py; fp16, BLOCK_N 64, 16
# heads, 4 warps; not yet timed on a GPU): at D = 128 the word tile takes ~1020 instructions a warp
# per key tile, 4 planes 948 (the interleave's PRMTs and STS gone), 2 planes 2278 (byte loads, as
# the byte tile's 2275: there the bytes cost, not the interleave), 8 planes 2618 (a [16, 16] plane
# output cannot be split over 4 warps: 4x the HMMAs, and spills); at D = 64 4 planes are [16, 16]
# too (1457 against 714).  Prefill: 4 planes about as many as the word tile at 64 / 128, fewer at
# 256, with fewer spills.
# HALINFER_INT4_SPLIT=0/2/4/8/auto sets it for a process.
INT4_SPLIT = {"auto": -1}.get(os.environ.get("HALINFER_INT4_SPLIT", "auto"), None)
if INT4_SPLIT is None:
    INT4_SPLIT = int(os.environ["HALINFER_INT4_SPLIT"])
# Decode prefetch (attention_decode._decode_kernel PREFETCH).  Compiled for sm_90 with the launch's
# specialization (benchmarks/kernels/kv_pipe_sass.py; bf16 q, D 128, BLOCK_N 64, 16 heads, 4 warps,
# num_stages 2), every mode's K/V tiles and scales already go to shared memory by cp.async (LDGSTS,
# TTGIR async_copy_global_to_local), quantized or not, but with ONE buffer each: the copies for
# tile i + 1 are issued after tile i's last dot and waited for (async_wait 0) at the top of the
# next iteration, and the block-table load feeding their addresses is a plain LDG issued just
# before them (not pipelined).  So a program never computes while its own loads are in flight,
# and each iteration waits out two global latencies in a row (block table, then K / V); only other
# programs on the SM hide them: bytes in flight per SM ~ programs x tile bytes, bf16 4 (103
# registers) x 32 KB, int8 3 (167) x 16 KB, int4 words 4 (128) x 8 KB, with ~2x bf16's
# instructions per tile to issue meanwhile (the measured 4.0 / 1.7 / 0.74 TB/s).
# KV_PREFETCH: 0 as before; 1 the block-table entries a tile ahead (carried in registers), so the
# pipeliner's copies for tile i + 1 use entries loaded during tile i - 1: one latency an iteration
# (int8 128 registers, fp8 146, int4 words 132, 4 planes 144); 2 the whole next tile (stored data,
# scales, zeros) into registers before tile i's dots, entries two tiles ahead, Triton's pipeliner
# off (num_stages 1): the loads overlap the dots, at ~250 registers for int8 / fp8 (2 programs an
# SM).  HALINFER_KV_PREFETCH=0 / 1 / 2 / auto (the default, as timed on an H200: 2 for int4 caches,
# 1 for int8 / fp8, 0 for the model dtype, which is at 95% of copy bandwidth without it;
# attention_decode.decode_prefetch).  Results are the same bit for bit in every mode (the same
# arithmetic in the same order).
KV_PREFETCH = {"auto": -1}.get(os.environ.get("HALINFER_KV_PREFETCH", "auto"), None)
if KV_PREFETCH is None:
    KV_PREFETCH = int(os.environ["HALINFER_KV_PREFETCH"])
# Inline PTX for the int4 tiles' unpack (_nibble_plane, _keep_magic2): Triton compiles
# (w & KEEP2) | MAGIC2 as two LOP3s (SASS takes one 32-bit immediate an instruction), and the
# split tile's int16 halves as a shift, LOP3s and PRMTs per lane; one lop3.b32 with both
# constants (and a 32-bit shift for two lanes) makes each pair of elements in two instructions.
# Passed to the kernels as their ASM constexpr by the launchers (attention_args.attn_args): only
# compiled for CUDA (never the interpreter, ROCm, or a backend whose Triton takes no PTX: MACA).
# HALINFER_INT4_ASM=0 sets it off for a process (timing against plain Triton); results are the
# same bit for bit either way.
INT4_ASM = os.environ.get("HALINFER_INT4_ASM", "1") != "0"
KV_INT4 = 3            # store_kv.KV_MODES["int4"]
KV_INT4_PLAIN = 4
KV_INT4_WORDS = 5
KV_INT4_SPLIT2 = 6
KV_INT4_SPLIT8 = 7
KV_INT4_SPLIT4 = 8

# A nibble c (0..15) put in the top four mantissa bits of 16.0 gives the float 16 + c exactly
# (16..31 is one binade with a step of 1): fp16 16.0 = 0x4C00 (10 mantissa bits, c << 6), bf16
# 16.0 = 0x4180 (7 bits, c << 3).  16 is the smallest bias that holds 0..15 so; a larger one
# (0x6400 = 1024 + c in fp16, no shift) would work too, but the dots would then sum terms up to
# 64 times larger, and their fp32 rounding with them, before the bias is taken off again.
INT4_BIAS = tl.constexpr(16.0)
LOG2E = tl.constexpr(1.4426950408889634)   # scores go to exp2 times log2(e)
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
def _keep_magic2(x, dtype: tl.constexpr, ASM: tl.constexpr):
    """(x & KEEP2) | MAGIC2 on int32 words: both 16-bit halves of x given the nibble bits and the
    exponent of INT4_BIAS (F16_MAGIC / BF16_MAGIC); one LOP3 with ASM (INT4_ASM says why)."""
    if ASM:
        if dtype == tl.float16:
            y = tl.inline_asm_elementwise("lop3.b32 $0, $1, 0x03C003C0, 0x4C004C00, 0xea;", "=r,r", [x],
                                          dtype=tl.int32, is_pure=True, pack=1)
        else:
            y = tl.inline_asm_elementwise("lop3.b32 $0, $1, 0x00780078, 0x41804180, 0xea;", "=r,r", [x],
                                          dtype=tl.int32, is_pure=True, pack=1)
    else:
        if dtype == tl.float16:
            y = (x & (F16_KEEP * 0x10001)) | (F16_MAGIC * 0x10001)
        else:
            y = (x & (BF16_KEEP * 0x10001)) | (BF16_MAGIC * 0x10001)
    return y


@triton.jit
def _asm_pairs(h, asm: tl.constexpr, dtype: tl.constexpr):
    """asm on int16 h two elements a 32-bit register (pack=2), giving dtype (fp16 / bf16)."""
    if dtype == tl.float16:
        t = tl.inline_asm_elementwise(asm, "=r,r", [h], dtype=tl.float16, is_pure=True, pack=2)
    else:
        t = tl.inline_asm_elementwise(asm, "=r,r", [h], dtype=tl.bfloat16, is_pure=True, pack=2)
    return t


@triton.jit
def _nibble_plane(h, k: tl.constexpr, dtype: tl.constexpr, ASM: tl.constexpr):
    """int16 halves of the cache's words h (nibble k at bits 4k) -> dtype INT4_BIAS + nibble k of
    each, by bit pattern.  ASM: two halves a 32-bit register, one shift and one LOP3 for both
    (lane-independent: bits shifted across the halves' border are masked off, so it is exact
    whichever two elements share a register)."""
    if ASM:
        # (the shifts are SH - 4k: fp16 6, 2, -2, -6; bf16 3, -1, -5, -9)
        if dtype == tl.float16:
            if k == 0:
                t = _asm_pairs(h, "{.reg .b32 t; shl.b32 t, $1, 6; lop3.b32 $0, t, 0x03C003C0, 0x4C004C00, 0xea;}", dtype)
            elif k == 1:
                t = _asm_pairs(h, "{.reg .b32 t; shl.b32 t, $1, 2; lop3.b32 $0, t, 0x03C003C0, 0x4C004C00, 0xea;}", dtype)
            elif k == 2:
                t = _asm_pairs(h, "{.reg .b32 t; shr.b32 t, $1, 2; lop3.b32 $0, t, 0x03C003C0, 0x4C004C00, 0xea;}", dtype)
            else:
                t = _asm_pairs(h, "{.reg .b32 t; shr.b32 t, $1, 6; lop3.b32 $0, t, 0x03C003C0, 0x4C004C00, 0xea;}", dtype)
        else:
            if k == 0:
                t = _asm_pairs(h, "{.reg .b32 t; shl.b32 t, $1, 3; lop3.b32 $0, t, 0x00780078, 0x41804180, 0xea;}", dtype)
            elif k == 1:
                t = _asm_pairs(h, "{.reg .b32 t; shr.b32 t, $1, 1; lop3.b32 $0, t, 0x00780078, 0x41804180, 0xea;}", dtype)
            elif k == 2:
                t = _asm_pairs(h, "{.reg .b32 t; shr.b32 t, $1, 5; lop3.b32 $0, t, 0x00780078, 0x41804180, 0xea;}", dtype)
            else:
                t = _asm_pairs(h, "{.reg .b32 t; shr.b32 t, $1, 9; lop3.b32 $0, t, 0x00780078, 0x41804180, 0xea;}", dtype)
    else:
        if dtype == tl.float16:
            t = ((_shl(h, F16_SHIFT - 4 * k) & F16_KEEP) | F16_MAGIC).to(dtype, bitcast=True)
        else:
            t = ((_shl(h, BF16_SHIFT - 4 * k) & BF16_KEEP) | BF16_MAGIC).to(dtype, bitcast=True)
    return t


@triton.jit
def _int4_bytes(raw, C: tl.constexpr, dtype: tl.constexpr):
    """[BLOCK_N, C] nibbles from [BLOCK_N, C / 2] bytes (_raw_tile, KV 3), each byte loaded once:
    channel 2j is byte j's low nibble, 2j + 1 its high one (store_kv.py, core/ops/kv_quant.py);
    masked bytes read as nibbles 0.  fp16 / bf16: INT4_BIAS + c, by bit pattern (see F16_MAGIC);
    other dtypes: c, converted."""
    N: tl.constexpr = raw.shape[0]
    # uint8 -> int16 zero-extends: no sign bits come down with the high nibble.
    b = raw.to(tl.int16)
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
def _int4_words(w, C: tl.constexpr, dtype: tl.constexpr, ASM: tl.constexpr):
    """_int4_bytes for fp16 / bf16 from int32 words w [BLOCK_N, C / 8] (_raw_tile, KV 5: rows
    4-byte aligned, NCH a multiple of 8).  A word holds channels 8m .. 8m + 7 (nibble i at bits
    4i); shifted by SH - 4k and masked, it has channels 8m + k and 8m + 4 + k in the top mantissa
    bits of its two 16-bit halves, so each integer op makes two elements.  The halves are then
    put in channel order."""
    tl.static_assert(dtype.primitive_bitwidth == 16, "the int4 word tile is for fp16 / bf16")
    N: tl.constexpr = w.shape[0]
    SH: tl.constexpr = F16_SHIFT if dtype == tl.float16 else BF16_SHIFT
    # (>> is arithmetic on int32: the sign bits it brings in are masked off.)
    p0 = _keep_magic2(_shl(w, SH), dtype, ASM)
    p1 = _keep_magic2(_shl(w, SH - 4), dtype, ASM)
    p2 = _keep_magic2(_shl(w, SH - 8), dtype, ASM)
    p3 = _keep_magic2(_shl(w, SH - 12), dtype, ASM)
    # u_k [.., 2]: channels (8m + k, 8m + 4 + k); channel 8m + 4a + 2b + c is u_{2b + c}[a].
    u0 = tl.join(p0.to(tl.int16), (p0 >> 16).to(tl.int16))
    u1 = tl.join(p1.to(tl.int16), (p1 >> 16).to(tl.int16))
    u2 = tl.join(p2.to(tl.int16), (p2 >> 16).to(tl.int16))
    u3 = tl.join(p3.to(tl.int16), (p3 >> 16).to(tl.int16))
    t = tl.join(tl.join(u0, u2), tl.join(u1, u3))    # [.., a, b, c]
    return tl.reshape(t, [N, C]).to(dtype, bitcast=True)


@triton.jit
def _int4_tile(ptr, rows, ch, nmask, NCH: tl.constexpr, dtype: tl.constexpr):
    """The byte tile (KV_INT4) loaded: _int4_bytes of _raw_tile."""
    return _int4_bytes(_raw_tile(ptr, rows, ch, nmask, NCH, 3), ch.shape[0], dtype)


@triton.jit
def _int4_tile_words(ptr, rows, ch, nmask, NCH: tl.constexpr, dtype: tl.constexpr, ASM: tl.constexpr):
    """The word tile (KV_INT4_WORDS) loaded: _int4_words of _raw_tile."""
    tl.static_assert(NCH % 8 == 0, "the int4 word tile reads whole words")
    return _int4_words(_raw_tile(ptr, rows, ch, nmask, NCH, 5), ch.shape[0], dtype, ASM)


@triton.jit
def _raw_tile(ptr, rows, ch, nmask, NCH: tl.constexpr, KV: tl.constexpr):
    """A tile's stored data as loaded, before any conversion (what the decode kernel's prefetch
    carries in registers from one key tile to the next): int4 bytes (KV 3 / 6: [BLOCK_N, C / 2];
    KV 4: [BLOCK_N, C], a byte per channel), int32 words (KV 5 / 7: [BLOCK_N, C / 8]), their int16
    halves (KV 8: [BLOCK_N, C / 4], as its planes' columns: _unpack_planes), or the stored values
    [BLOCK_N, C].  Masks as _load_tile's."""
    C: tl.constexpr = ch.shape[0]
    if KV == 3 or KV == 6:
        j = tl.arange(0, C // 2)
        # The byte mask from constexprs (not from a channel mask), so the load stays vectorized;
        # KV 3 reads the byte of an odd NCH's last channel (an MLA value width), 6 whole bytes.
        NB: tl.constexpr = (NCH + 1) // 2 if KV == 3 else NCH // 2
        r = tl.load(ptr + rows[:, None] + j[None, :], mask=nmask[:, None] & (j < NB)[None, :], other=0)
    elif KV == 8:
        e = tl.arange(0, C // 4)
        r = tl.load(ptr.to(tl.pointer_type(tl.int16)) + (rows // 2)[:, None] + e[None, :],
                    mask=nmask[:, None] & (e < NCH // 4)[None, :], other=0)
    elif KV == 5 or KV == 7:
        m = tl.arange(0, C // 8)
        r = tl.load(ptr.to(tl.pointer_type(tl.int32)) + (rows // 4)[:, None] + m[None, :],
                    mask=nmask[:, None] & (m < NCH // 8)[None, :], other=0)
    elif KV == 4:
        r = tl.load(ptr + rows[:, None] + (ch // 2)[None, :], mask=nmask[:, None] & (ch < NCH)[None, :], other=0)
    elif KV == 2:
        # fp8: loaded without ``other`` (an int/float constant cast to fp8 is not supported on
        # every triton); _unpack_tile zeroes the masked lanes after the upcast.
        r = tl.load(ptr + rows[:, None] + ch[None, :], mask=nmask[:, None] & (ch < NCH)[None, :])
    else:
        r = tl.load(ptr + rows[:, None] + ch[None, :], mask=nmask[:, None] & (ch < NCH)[None, :], other=0.0)
    return r


@triton.jit
def _unpack_tile(raw, ch, nmask, NCH: tl.constexpr, KV: tl.constexpr, dtype: tl.constexpr, ASM: tl.constexpr):
    """_raw_tile's data -> _load_tile's [BLOCK_N, C] tile in ``dtype`` (unsplit modes)."""
    if KV == 3:
        t = _int4_bytes(raw, ch.shape[0], dtype)
    elif KV == 5:
        t = _int4_words(raw, ch.shape[0], dtype, ASM)
    elif KV == 4:   # KV_INT4_PLAIN: the previous int4 tile, for timing against the above
        t = ((raw.to(tl.int32) >> ((ch % 2) * 4)[None, :]) & 15).to(dtype)
    elif KV == 2:
        t = tl.where(nmask[:, None] & (ch < NCH)[None, :], raw.to(dtype), 0.0)
    else:
        t = raw.to(dtype)
    return t


@triton.jit
def _load_tile(ptr, rows, ch, nmask, NCH: tl.constexpr, KV: tl.constexpr, dtype: tl.constexpr, ASM: tl.constexpr):
    """rows [BLOCK_N] offsets of (token, head) vectors (nmask: which are read), ch [C] channels
    (those < NCH are read) -> a [BLOCK_N, C] tile in ``dtype``.  int4: the nibbles (KV 3 / 5 with
    fp16 / bf16: plus INT4_BIAS), masked bytes read as nibble 0; int8 / fp8: the stored values,
    zero where masked.  All exact in fp16 / bf16.  Scales and zeros are applied by the callers.
    ASM: unpack with inline PTX (INT4_ASM)."""
    return _unpack_tile(_raw_tile(ptr, rows, ch, nmask, NCH, KV), ch, nmask, NCH, KV, dtype, ASM)


# How many channel planes a split tile's values come in (1: every other mode), and the KV mode
# of an NP-plane tile, are written out as constexpr arithmetic where they are needed: a
# @triton.jit helper returning a constexpr gives a tensor on triton 3.6 (its ``==`` then fails
# to compile, and so did every attention kernel).
#     planes(KV) = (KV < 6) + 2 * (KV == 6) + 8 * (KV == 7) + 4 * (KV == 8)
#     mode(NP)   = 6 * (NP == 2) + 7 * (NP == 8) + 8 * (NP == 4)


@triton.jit
def _int4_planes(ptr, rows, nmask, NCH: tl.constexpr, C: tl.constexpr, NP: tl.constexpr, dtype: tl.constexpr,
                 ASM: tl.constexpr):
    """The split tiles: a tuple of NP tiles [BLOCK_N, C / NP], plane i holding the channels
    _plane_channels(C / NP, NP, i) (those >= NCH read as nibble 0), made as _int4_tile /
    _int4_tile_words make them (16-bit dtypes: INT4_BIAS + c by bit pattern; NP = 4 / 8 read
    int32 words under the word tile's conditions), but never joined into channel order."""
    raw = _raw_tile(ptr, rows, tl.arange(0, C), nmask, NCH, 6 * (NP == 2) + 7 * (NP == 8) + 8 * (NP == 4))
    return _unpack_planes(raw, C, NP, dtype, ASM)


@triton.jit
def _unpack_planes(raw, C: tl.constexpr, NP: tl.constexpr, dtype: tl.constexpr, ASM: tl.constexpr):
    """_int4_planes from its _raw_tile data (bytes for NP = 2, int32 words for 8, their int16
    halves for 4)."""
    if NP == 2:
        b = raw.to(tl.int16)
        if dtype.primitive_bitwidth == 16:
            if dtype == tl.float16:
                SH: tl.constexpr = F16_SHIFT
                KEEP: tl.constexpr = F16_KEEP
                MAGIC: tl.constexpr = F16_MAGIC
            else:
                SH: tl.constexpr = BF16_SHIFT
                KEEP: tl.constexpr = BF16_KEEP
                MAGIC: tl.constexpr = BF16_MAGIC
            t = (((b << SH) & KEEP) | MAGIC).to(dtype, bitcast=True), \
                ((_shl(b, SH - 4) & KEEP) | MAGIC).to(dtype, bitcast=True)
        else:
            t = (b & 15).to(dtype), (b >> 4).to(dtype)
    elif NP == 4:
        # 4 planes from the words' int16 halves (column 2m + h: half h of word m, channels 8m + 4h
        # .. 8m + 4h + 3): plane k is nibble k of every half, channel 8m + 4h + k at column 2m + h,
        # so the halves never move.  (An earlier form split int32 words into halves and joined
        # them back: sm_90 SASS of the decode key loop, bf16, D 128, 1463 instructions a warp per
        # key tile and 213 registers; this form 1488 / 216 in plain Triton, 1008 / 202 with INT4_ASM.)
        tl.static_assert(dtype.primitive_bitwidth == 16, "4 planes: fp16 / bf16")
        t = ()
        for k in tl.static_range(4):
            t = t + (_nibble_plane(raw, k, dtype, ASM),)
    else:
        tl.static_assert(NP == 8 and dtype.primitive_bitwidth == 16, "8 planes: fp16 / bf16")
        SH: tl.constexpr = F16_SHIFT if dtype == tl.float16 else BF16_SHIFT
        lo = ()
        hi = ()
        for k in tl.static_range(4):
            # word shifted by 4k: channel 8m + k in its low half, 8m + 4 + k in its high half
            pk = _keep_magic2(_shl(raw, SH - 4 * k), dtype, ASM)
            lo = lo + (pk.to(tl.int16),)
            hi = hi + ((pk >> 16).to(tl.int16),)
        t = ()
        for k in tl.static_range(8):
            t = t + ((lo + hi)[k].to(dtype, bitcast=True),)
    return t


@triton.jit
def _plane_channels(W: tl.constexpr, NP: tl.constexpr, i: tl.constexpr):
    """The channels of plane i of NP (_int4_planes), column by column: [W].  2 / 8 planes:
    NP j + i (bytes: low / high nibbles; words: nibble i of word j); 4: 8 (j // 2) + 4 (j % 2) + i."""
    j = tl.arange(0, W)
    if NP == 4:
        c = (j // 2) * 8 + (j % 2) * 4 + i
    else:
        c = j * NP + i
    return c


@triton.jit
def online_softmax(sc, m_i, l_i):
    """One key tile of the online softmax over log2-scaled scores sc [rows, BLOCK_N] (masked keys
    -inf): (p, alpha, m_new, l_new), the tile's unnormalised probabilities, the factor that
    rescales what was accumulated so far, and the running row maximum and sum."""
    m_new = tl.maximum(m_i, tl.max(sc, axis=1))
    alpha = tl.exp2(m_i - m_new)
    p = tl.exp2(sc - m_new[:, None])
    return p, alpha, m_new, l_i * alpha + tl.sum(p, axis=1)


@triton.jit
def load_q(ptr, rmask, D: tl.constexpr, BLOCK_D: tl.constexpr, KV: tl.constexpr):
    """Queries [rows, BLOCK_D] from ptr [rows, 1] (channel 0 of each row); the split tiles
    (more than one plane): a tuple of their planes [rows, BLOCK_D / NP] (_plane_channels), each
    a strided load, once per program."""
    NP: tl.constexpr = (KV < 6) + 2 * (KV == 6) + 8 * (KV == 7) + 4 * (KV == 8)   # planes
    if NP == 1:
        d = tl.arange(0, BLOCK_D)
        q = tl.load(ptr + d[None, :], mask=rmask[:, None] & (d < D)[None, :], other=0.0)
    else:
        q = ()
        for i in tl.static_range(NP):
            c = _plane_channels(BLOCK_D // NP, NP, i)
            q = q + (tl.load(ptr + c[None, :], mask=rmask[:, None] & (c < D)[None, :], other=0.0),)
    return q


@triton.jit
def q_row_sums(q, KV: tl.constexpr):
    """sum(q) per row in float32 (int4 keys' zeros: z * sum(q)), over every plane."""
    NP: tl.constexpr = (KV < 6) + 2 * (KV == 6) + 8 * (KV == 7) + 4 * (KV == 8)   # planes
    if NP == 1:
        s = tl.sum(q.to(tl.float32), axis=1)
    else:
        s = tl.sum(q[0].to(tl.float32), axis=1)
        for i in tl.static_range(1, NP):
            s += tl.sum(q[i].to(tl.float32), axis=1)
    return s


@triton.jit
def acc_zeros(ROWS: tl.constexpr, BLOCK_DV: tl.constexpr, KV: tl.constexpr):
    """The output accumulator: [ROWS, BLOCK_DV] float32, or a tuple of per-plane ones (split tiles)."""
    NP: tl.constexpr = (KV < 6) + 2 * (KV == 6) + 8 * (KV == 7) + 4 * (KV == 8)   # planes
    if NP == 1:
        acc = tl.full([ROWS, BLOCK_DV], 0.0, tl.float32)
    else:
        acc = ()
        for i in tl.static_range(NP):
            acc = acc + (tl.full([ROWS, BLOCK_DV // NP], 0.0, tl.float32),)
    return acc


@triton.jit
def acc_scale(acc, f, KV: tl.constexpr):
    """acc * f[:, None], plane by plane."""
    NP: tl.constexpr = (KV < 6) + 2 * (KV == 6) + 8 * (KV == 7) + 4 * (KV == 8)   # planes
    if NP == 1:
        out = acc * f[:, None]
    else:
        out = ()
        for i in tl.static_range(NP):
            out = out + (acc[i] * f[:, None],)
    return out


@triton.jit
def acc_store(ptr, acc, div, rmask, DV: tl.constexpr, BLOCK_DV: tl.constexpr, KV: tl.constexpr):
    """Store acc / div[:, None] at ptr [rows, 1] + channel, each plane to its own channels."""
    NP: tl.constexpr = (KV < 6) + 2 * (KV == 6) + 8 * (KV == 7) + 4 * (KV == 8)   # planes
    if NP == 1:
        c = tl.arange(0, BLOCK_DV)
        tl.store(ptr + c[None, :], (acc / div[:, None]).to(ptr.dtype.element_ty),
                 mask=rmask[:, None] & (c < DV)[None, :])
    else:
        for i in tl.static_range(NP):
            c = _plane_channels(BLOCK_DV // NP, NP, i)
            tl.store(ptr + c[None, :], (acc[i] / div[:, None]).to(ptr.dtype.element_ty),
                     mask=rmask[:, None] & (c < DV)[None, :])


@triton.jit
def load_keys(k_ptr, ks_ptr, kz_ptr, blk, tok, kvh, nmask, d, D: tl.constexpr,
              stride_kb, stride_kt, stride_kh, stride_ksb, stride_kst, stride_ksh, KV: tl.constexpr):
    """One key tile's loads, nothing computed from them: (stored data, scales, int4 zeros)
    (_raw_tile's; scales / zeros [BLOCK_N] float32, or nmask as a placeholder where the mode has
    none).  scores_from turns them into scores; the decode kernel's prefetch issues these a tile early."""
    NP: tl.constexpr = (KV < 6) + 2 * (KV == 6) + 8 * (KV == 7) + 4 * (KV == 8)   # planes
    krow = blk * stride_kb + tok * stride_kt + kvh * stride_kh
    if NP == 1:
        raw = _raw_tile(k_ptr, krow, d, nmask, D, KV)
    else:
        raw = _raw_tile(k_ptr, krow, d, nmask, D, 6 * (NP == 2) + 7 * (NP == 8) + 8 * (NP == 4))
    ksc = nmask
    kz = nmask
    if KV != 0:
        srow = blk * stride_ksb + tok * stride_kst + kvh * stride_ksh
        ksc = tl.load(ks_ptr + srow, mask=nmask, other=0.0)
        if KV >= 3:
            kz = tl.load(kz_ptr + srow, mask=nmask, other=0.0)
    return raw, ksc, kz


@triton.jit
def scores_from(q, qsum, raw, ksc, kz, nmask, d, D: tl.constexpr, scale, soft_cap,
                KV: tl.constexpr, SOFTCAP: tl.constexpr, PREC: tl.constexpr, ASM: tl.constexpr):
    """key_scores from load_keys's (raw, ksc, kz) of the same tile."""
    NP: tl.constexpr = (KV < 6) + 2 * (KV == 6) + 8 * (KV == 7) + 4 * (KV == 8)   # planes
    if NP == 1:
        qdt: tl.constexpr = q.dtype
        k = _unpack_tile(raw, d, nmask, D, KV, qdt, ASM)
        sc = tl.dot(q, tl.trans(k), input_precision=PREC)
    else:
        # One dot per plane, chained through the accumulator: q . k = sum_i q_i . k_i.
        qdt: tl.constexpr = q[0].dtype
        k = _unpack_planes(raw, d.shape[0], NP, qdt, ASM)
        sc = tl.dot(q[0], tl.trans(k[0]), input_precision=PREC)
        for i in tl.static_range(1, NP):
            sc = tl.dot(q[i], tl.trans(k[i]), sc, input_precision=PREC)
    # The constant factor (scale, and log2(e) for exp2 unless a soft cap comes between) goes into
    # the per-key vectors, not into every score: one multiply an element fewer, two for int4.
    if SOFTCAP:
        f = scale / soft_cap
    else:
        f = scale * LOG2E
    if KV != 0:
        # Apply the per-key scale to the scores, not the keys: q . (c s + z) = s (q . c) + z sum(q).
        if KV >= 3:   # int4
            if KV != 4 and qdt.primitive_bitwidth == 16:
                # The tile holds c + bias: q . (c s + z) = s (q . (c + bias)) + (z - bias s) sum(q).
                # qsum is summed from the same 16-bit q the dot reads, so the bias cancels in fp32.
                kz = kz - INT4_BIAS * ksc
            sc = sc * (ksc * f)[None, :] + qsum[:, None] * (kz * f)[None, :]
        else:
            sc = sc * (ksc * f)[None, :]
    else:
        sc = sc * f
    if SOFTCAP:
        sc = (soft_cap * LOG2E) * tanh(sc)
    return sc


@triton.jit
def key_scores(q, qsum, k_ptr, ks_ptr, kz_ptr, blk, tok, kvh, nmask, d, D: tl.constexpr,
               stride_kb, stride_kt, stride_kh, stride_ksb, stride_kst, stride_ksh,
               scale, soft_cap, KV: tl.constexpr, SOFTCAP: tl.constexpr, PREC: tl.constexpr, ASM: tl.constexpr):
    """Paged attention: q [rows, BLOCK_D] against one tile of cached keys -> scaled (and
    soft-capped) scores [rows, BLOCK_N] times log2(e), ready for exp2 (online_softmax); blk/tok:
    each key's block and slot; d: tl.arange of BLOCK_D, D: the head dim (channels read).
    KV: 0 model dtype, 1 int8, 2 fp8, 3 .. 8 int4 (KV_INT4, KV_INT4_PLAIN, KV_INT4_WORDS, and the split
    tiles KV_INT4_SPLIT2 / 8 / 4: q is then load_q's tuple of planes; qsum: q's row sums, for int4 zeros).
    = scores_from(load_keys(..))."""
    raw, ksc, kz = load_keys(k_ptr, ks_ptr, kz_ptr, blk, tok, kvh, nmask, d, D, stride_kb, stride_kt, stride_kh,
                             stride_ksb, stride_kst, stride_ksh, KV)
    return scores_from(q, qsum, raw, ksc, kz, nmask, d, D, scale, soft_cap, KV, SOFTCAP, PREC, ASM)


@triton.jit
def load_values(v_ptr, vs_ptr, vz_ptr, blk, tok, kvh, nmask, dv, DV: tl.constexpr,
                stride_vb, stride_vt, stride_vh, stride_vsb, stride_vst, stride_vsh, KV: tl.constexpr):
    """One value tile's loads (load_keys's for values): (stored data, scales, int4 zeros)."""
    NP: tl.constexpr = (KV < 6) + 2 * (KV == 6) + 8 * (KV == 7) + 4 * (KV == 8)   # planes
    vrow = blk * stride_vb + tok * stride_vt + kvh * stride_vh
    if NP == 1:
        raw = _raw_tile(v_ptr, vrow, dv, nmask, DV, KV)
    else:
        raw = _raw_tile(v_ptr, vrow, dv, nmask, DV, 6 * (NP == 2) + 7 * (NP == 8) + 8 * (NP == 4))
    vsc = nmask
    vz = nmask
    if KV != 0:
        srow = blk * stride_vsb + tok * stride_vst + kvh * stride_vsh
        vsc = tl.load(vs_ptr + srow, mask=nmask, other=0.0)
        if KV >= 3:
            vz = tl.load(vz_ptr + srow, mask=nmask, other=0.0)
    return raw, vsc, vz


@triton.jit
def values_from(acc, alpha, q, p, raw, vsc, vz, nmask, dv, DV: tl.constexpr, KV: tl.constexpr, PREC: tl.constexpr,
                ASM: tl.constexpr):
    """weighted_values from load_values's (raw, vsc, vz) of the same tile."""
    NP: tl.constexpr = (KV < 6) + 2 * (KV == 6) + 8 * (KV == 7) + 4 * (KV == 8)   # planes
    if NP == 1:
        qdt: tl.constexpr = q.dtype
    else:
        qdt: tl.constexpr = q[0].dtype
    pw = p
    if KV != 0:
        # p (c s + z) = (p s) c + sum(p z): scales folded into p, zeros added per row.
        pw = p * vsc[None, :]
    pw = pw.to(qdt)
    if KV >= 3:   # int4
        zt = tl.sum(p * vz[None, :], axis=1)
        if KV != 4 and qdt.primitive_bitwidth == 16:
            # The tile holds c + bias: the dot added bias * sum(pw) per row.  Taken off with the
            # 16-bit pw the dot read (not p s in fp32), or pw's rounding would come back times bias.
            zt = zt - INT4_BIAS * tl.sum(pw.to(tl.float32), axis=1)
    if NP == 1:
        v = _unpack_tile(raw, dv, nmask, DV, KV, qdt, ASM)
        out = tl.dot(pw, v, input_precision=PREC)
        if KV >= 3:
            out = out + zt[:, None]
        acc = acc * alpha[:, None] + out
    else:
        # Per plane: the zero term (the same for every channel) goes in with the rescale, then
        # the dot accumulates onto it.
        v = _unpack_planes(raw, dv.shape[0], NP, qdt, ASM)
        new = ()
        for i in tl.static_range(NP):
            new = new + (tl.dot(pw, v[i], acc[i] * alpha[:, None] + zt[:, None], input_precision=PREC),)
        acc = new
    return acc


@triton.jit
def weighted_values(acc, alpha, q, p, v_ptr, vs_ptr, vz_ptr, blk, tok, kvh, nmask, dv, DV: tl.constexpr,
                    stride_vb, stride_vt, stride_vh, stride_vsb, stride_vst, stride_vsh,
                    KV: tl.constexpr, PREC: tl.constexpr, ASM: tl.constexpr):
    """Paged attention: the online softmax's acc * alpha + p . v, p [rows, BLOCK_N] the
    probabilities of one tile of cached values (dv: tl.arange of BLOCK_DV, DV: the value width;
    columns from DV on are not meaningful).  acc: acc_zeros's kind (split tiles: per plane).
    = values_from(load_values(..))."""
    raw, vsc, vz = load_values(v_ptr, vs_ptr, vz_ptr, blk, tok, kvh, nmask, dv, DV, stride_vb, stride_vt, stride_vh,
                               stride_vsb, stride_vst, stride_vsh, KV)
    return values_from(acc, alpha, q, p, raw, vsc, vz, nmask, dv, DV, KV, PREC, ASM)
