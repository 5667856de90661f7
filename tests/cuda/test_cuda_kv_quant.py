"""int4 and fp8 KV caches in the Triton kernels: store_kv writes what core/ops/kv_quant.py
defines, and decode / prefill attention over the stored cache equals the core reference's
attention over the same bytes (which it dequantizes with kv_quant.dequantize_kv).

Shapes are picked to cross the kernels' edges: GQA groups 1, 4 and 7 (odd head counts),
head dims that are not powers of two, block sizes 8 to 32, sequence lengths on both sides
of the interpreter's key tiles (16 / 64) and of the decode splits.  Everything the step's
sequences do not own is poison (NaN scales and zeros, NaN fp8 / 0xFF int4 bytes), so a
kernel reading a slot it does not own gives NaN.  The int4 tiles (kernels/triton/tl_math.py: the
word and byte tiles that build 16 + c by bit pattern, the old converting tile, and the split tiles
of 2 / 4 / 8 channel planes) are checked alone, bit for bit, and in attention over tokens whose
scales and zeros differ by decades."""
from __future__ import annotations

import pytest
import torch

from halinfer.core.attention import LayerKV, MetadataBuilder
from halinfer.core.ops import Ops
from halinfer.core.ops.kv_quant import kv_storage_dtype, kv_stored_dim
from tritonops_util import TOL, paged_plan, read, ref

REF = Ops()
MODES = ("int4", "fp8")


def _cache(mode, layout, nb, bs, hk, d, device):
    """A poisoned quantized cache of one kind (k or v): (values, scales, zeros or None)."""
    dd = kv_stored_dim(mode, d)
    shape = (nb, bs, hk, dd) if layout == "NHD" else (nb, hk, bs, dd)
    if mode == "int4":
        c = torch.full(shape, 0xFF, dtype=torch.uint8, device=device)
    else:
        c = torch.full(shape, float("nan"), dtype=torch.float32, device=device).to(kv_storage_dtype(mode, None))
    s = torch.full(shape[:-1], float("nan"), device=device)
    z = torch.full(shape[:-1], float("nan"), device=device) if mode == "int4" else None
    return c, s, z


def _layer(mode, layout, nb, bs, hk, d, dv, device) -> LayerKV:
    kc, ks, kz = _cache(mode, layout, nb, bs, hk, d, device)
    vc, vs, vz = (None, None, None) if dv is None else _cache(mode, layout, nb, bs, hk, dv, device)
    return LayerKV(kc, vc, layout, ks, vs, quant=mode, k_zero=kz, v_zero=vz)


def _cpu(kv: LayerKV) -> LayerKV:
    c = lambda t: None if t is None else t.detach().cpu().clone()  # noqa: E731
    return LayerKV(c(kv.k), c(kv.v), kv.layout, c(kv.k_scale), c(kv.v_scale), kv.quant, c(kv.k_zero), c(kv.v_zero))


def _tol(dtype, mode):
    atol, rtol = TOL[dtype]
    # int4 adds z * sum(q) to the scores (a larger magnitude than the scores themselves):
    # low-precision q rounding shows a little more.
    f = 4.0 if mode == "int4" else 2.0
    return atol * f, rtol * f


STORE_CASES = [  # T, Hk, D, Dv (None: MLA), block size, share of negative slots
    (1, 1, 64, 64, 16, 0.0),
    (7, 3, 80, 80, 16, 0.3),
    (40, 8, 128, 128, 32, 0.2),
    (33, 4, 96, 64, 8, 0.2),
    (19, 1, 80, None, 16, 0.2),
    (5, 2, 6, 6, 16, 0.0),            # head dim below a tile
]


# store_kv.STORE_OVERRIDE (num_warps, tokens a program): None is the launcher's choice; then the
# two it makes for quantized caches, forced at every T, and three more of bench_store_kv.py's sweep.
# (1 and 2 warps once rounded 0.3-0.5% of the fp8 values of some rows differently from torch: the
# scale was a plain, approximate division, and bf16 inputs often sit exactly on a rounding tie.)
STORE_CONFIGS = [None, (8, 1), (4, 1), (2, 4), (8, 2), (1, 1)]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("layout", ["NHD", "HND"])
@pytest.mark.parametrize("T,Hk,D,Dv,bs,neg", STORE_CASES,
                         ids=[f"T{c[0]}_hk{c[1]}_d{c[2]}_dv{c[3]}_bs{c[4]}" for c in STORE_CASES])
@pytest.mark.parametrize("store_cfg", STORE_CONFIGS, ids=["auto", "w8t1", "w4t1", "w2t4", "w8t2", "w1t1"])
def test_store_kv_quantized_matches_reference(target, ops, gen, monkeypatch, mode, layout, T, Hk, D, Dv, bs, neg,
                                              store_cfg):
    from halinfer.kernels.triton import store_kv as store_mod

    if target.interp and store_cfg in ((4, 1), (1, 1)):
        pytest.skip("interpreted, configs differ only in tokens a program: w8t1 runs this one")
    monkeypatch.setattr(store_mod, "STORE_OVERRIDE", store_cfg)
    dev, dt = target.device, target.dtype
    nb = -(-T // bs) + 3
    slots = (torch.randperm((nb - 2) * bs, generator=gen) + bs)[:T].long()
    slots[torch.rand(T, generator=gen) < neg] = -1
    k = (torch.randn(T, Hk, D, generator=gen) * 3 + torch.randn(T, Hk, 1, generator=gen)).to(dev, dt)
    v = None if Dv is None else torch.randn(T, Hk, Dv, generator=gen).to(dev, dt)
    kv = _layer(mode, layout, nb, bs, Hk, D, Dv, dev)
    want = _cpu(kv)
    ops.store_kv(k, v, kv, slots.to(dev))
    REF.store_kv(ref(k), ref(v), want, slots)
    got = _cpu(kv)
    for name in ("k", "v"):
        gc, wc = getattr(got, name), getattr(want, name)
        if wc is None:
            continue
        gs, ws = getattr(got, f"{name}_scale"), getattr(want, f"{name}_scale")
        assert torch.equal(gs.isnan(), ws.isnan()), f"{name}: scales written outside the mapped slots"
        torch.testing.assert_close(gs.nan_to_num(), ws.nan_to_num(), rtol=1e-6, atol=0, msg=f"{name} scales")
        if mode == "int4":
            gz, wz = getattr(got, f"{name}_zero"), getattr(want, f"{name}_zero")
            assert torch.equal(gz.nan_to_num(), wz.nan_to_num()) and torch.equal(gz.isnan(), wz.isnan()), \
                f"{name}: zeros differ"
            # nibble by nibble: a rounding tie after a different division may land one step apart
            gn = torch.stack((gc & 15, gc >> 4), -1).int()
            wn = torch.stack((wc & 15, wc >> 4), -1).int()
            untouched = wc == 0xFF
            assert torch.equal(gc[untouched], wc[untouched]), f"{name}: bytes written outside the mapped slots"
            assert int((gn - wn).abs().max()) <= 1 and float((gn != wn).float().mean()) < 1e-3, f"{name}: nibbles"
        else:
            assert torch.equal(gc.float().isnan(), wc.float().isnan()), f"{name}: written outside the mapped slots"
            # the same IEEE scale and round-half-even as torch's cast: every byte equal
            gb, wb = gc.view(torch.uint8), wc.view(torch.uint8)
            differ = (gb != wb) & ~wc.float().isnan()
            at = differ.nonzero()[:4].tolist()
            assert not differ.any(), f"{name}: {int(differ.sum())} of {int((~wc.float().isnan()).sum())} fp8 " \
                f"values differ, e.g. at {at}: {[float(gc[tuple(i)]) for i in at]} vs {[float(wc[tuple(i)]) for i in at]}"
        # and what was stored reads back close to the input (the format's own bound)
        x = ref(k if name == "k" else v)
        valid = slots >= 0
        if valid.any():
            from halinfer.core.ops.kv_quant import dequantize_kv
            sl = slots[valid]
            z = read(getattr(got, f"{name}_zero"), layout, sl, bs) if mode == "int4" else None
            back = dequantize_kv(read(gc, layout, sl, bs), read(gs, layout, sl, bs), z, mode)
            xv = x[valid]
            if mode == "int4":
                bound = (xv.amax(-1) - xv.amin(-1))[..., None] / 15 * 0.5001 + 1e-5
            else:
                bound = xv.abs().amax(-1, keepdim=True) * 2 ** -4 + 1e-5
            assert bool(((back - xv).abs() <= bound).all()), f"{name}: read back beyond the format's rounding"


ATTN_CASES = [  # id, seqs [(cached, new)], Hq, Hk, D, Dv (None: MLA, Dv channels of the latent), block size
    ("decode_g1", [(0, 1), (16, 1), (64, 1), (130, 1)], 4, 4, 64, 64, 16),
    ("decode_g4_odd", [(15, 1), (63, 1), (17, 1)], 12, 3, 80, 80, 8),
    ("decode_g7", [(31, 1), (100, 1), (1, 1)], 21, 3, 128, 128, 32),
    ("decode_mqa7", [(47, 1), (5, 1)], 7, 1, 64, 64, 16),
    ("decode_mla", [(20, 1), (66, 1)], 8, 1, 96, 64, 16),
    ("prefill_g1", [(0, 17), (9, 7)], 4, 4, 64, 64, 16),
    ("prefill_g4_odd", [(0, 33), (40, 9), (70, 1)], 12, 3, 80, 80, 8),
    ("prefill_g7", [(5, 20), (0, 65)], 14, 2, 128, 128, 32),
    ("prefill_dv", [(16, 16), (3, 30)], 6, 2, 96, 64, 16),
]


def _attend(target, gen, layout, mode, splits, name, seqs, Hq, Hk, D, Dv, bs, spread=None, copy=False):
    """Store keys / values through the kernel, attend over them, compare with the reference over
    the same bytes.  spread: (log10 range of the per-token magnitudes, offset in magnitudes) to draw
    each token's scale and zero far apart from the others'.  copy: prefill through the model-dtype
    copy of the step's blocks (kv_dequant.prefill_copy, forced); else straight over the cache."""
    from halinfer.kernels.triton import kv_dequant

    saved = kv_dequant.DEQUANT_MODES, kv_dequant.MIN_NEW_SHARE
    kv_dequant.DEQUANT_MODES, kv_dequant.MIN_NEW_SHARE = ({mode}, 0.0) if copy else (set(), 0.0)
    try:
        _attend_with(target, gen, layout, mode, splits, name, seqs, Hq, Hk, D, Dv, bs, spread)
    finally:
        kv_dequant.DEQUANT_MODES, kv_dequant.MIN_NEW_SHARE = saved


def _attend_with(target, gen, layout, mode, splits, name, seqs, Hq, Hk, D, Dv, bs, spread):
    from halinfer.kernels.triton.ops import TritonOps

    decode = all(q == 1 for _, q in seqs)
    ops = TritonOps(decode_splits=splits)
    dev, dt = target.device, target.dtype
    mla = name.endswith("mla")
    step, all_slots, nb = paged_plan(seqs, bs, gen)
    kv = _layer(mode, layout, nb, bs, Hk, D, None if mla else Dv, dev)
    # Store every position, all sequences in one call, through the kernel under test.
    slots = torch.cat(all_slots)
    n = len(slots)
    if spread is None:
        k = torch.randn(n, Hk, D, generator=gen) * 1.5 + torch.randn(n, Hk, 1, generator=gen)
        v = None if mla else torch.randn(n, Hk, Dv, generator=gen)
    else:
        decades, offset = spread

        def draw(width):
            mag = 10.0 ** ((torch.rand(n, Hk, 1, generator=gen) - 0.5) * decades)
            return mag * (torch.randn(n, Hk, width, generator=gen) + offset * torch.randn(n, Hk, 1, generator=gen))
        # Keys a little tamer, or the softmax would be one key per row.
        k = draw(D) * 0.3
        v = None if mla else draw(Dv)
    ops.store_kv(k.to(dev, dt), None if mla else v.to(dev, dt), kv, slots.to(dev))
    T = int(step.q_lens.sum())
    q = torch.randn(T, Hq, D, generator=gen).to(dt)
    meta = MetadataBuilder(torch.device(dev), bs).build(step)
    assert meta.is_decode == decode
    out = ops.paged_attention(q.to(dev), kv, meta, scale=D ** -0.5, v_head_dim=Dv if mla else None)
    # The reference reads the same bytes (dequantized in float32).
    expect = REF.paged_attention(q.float(), _cpu(kv), MetadataBuilder(torch.device("cpu"), bs).build(step),
                                 scale=D ** -0.5, v_head_dim=Dv if mla else None)
    a = out.detach().cpu().float()
    assert not torch.isnan(a).any(), f"{int(torch.isnan(a).sum())} NaN: an unowned slot was read or output unwritten"
    atol, rtol = _tol(dt, mode)
    if spread is not None:
        atol *= float(v.abs().mean()) if v is not None else float(k.abs().mean())   # atol in the values' units
    torch.testing.assert_close(a, expect, atol=atol, rtol=rtol)


@pytest.mark.parametrize("splits", [None, 3], ids=["auto_splits", "splits3"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("layout", ["NHD", "HND"])
@pytest.mark.parametrize("name,seqs,Hq,Hk,D,Dv,bs", ATTN_CASES, ids=[c[0] for c in ATTN_CASES])
def test_attention_over_quantized_cache(target, gen, layout, mode, splits, name, seqs, Hq, Hk, D, Dv, bs):
    if splits is not None and not all(q == 1 for _, q in seqs):
        pytest.skip("decode splits only apply to decode steps")
    _attend(target, gen, layout, mode, splits, name, seqs, Hq, Hk, D, Dv, bs)


SPREAD_CASES = [  # as ATTN_CASES, plus decode splits
    ("decode_d96", [(37, 1), (100, 1), (3, 1)], 8, 2, 96, 96, 16, None),
    ("decode_d80_split", [(70, 1), (129, 1)], 12, 3, 80, 80, 8, 3),
    ("decode_d128_mla", [(45, 1)], 4, 1, 128, 64, 16, None),
    ("decode_d36", [(21, 1), (5, 1)], 4, 2, 36, 36, 16, None),     # no whole words: the byte tile
    ("prefill_d80", [(11, 23), (0, 9), (50, 1)], 4, 2, 80, 80, 8, None),
    ("prefill_d96_dv", [(19, 31)], 6, 3, 96, 64, 16, None),
]
TILES = {  # INT4_MAGIC, INT4_WORDS, INT4_SPLIT
    "words": (True, True, 0), "bytes": (True, False, 0), "plain": (False, False, 0),
    "split2": (True, True, 2), "split4": (True, True, 4), "split8": (True, True, 8),
}


@pytest.mark.parametrize("tile", list(TILES))
@pytest.mark.parametrize("name,seqs,Hq,Hk,D,Dv,bs,splits", SPREAD_CASES, ids=[c[0] for c in SPREAD_CASES])
def test_int4_attention_scales_spread_per_token(target, gen, monkeypatch, tile, name, seqs, Hq, Hk, D, Dv, bs,
                                                splits):
    """int4 with each token's scale drawn over three decades and its zero several ranges away:
    the magic tiles' bias (tl_math.INT4_MAGIC) is taken off through each token's own scale and
    zero, so a fold with the wrong scale or token shows here.  words / bytes: the two magic
    tiles (KV_INT4_WORDS, KV_INT4; float32 queries always take the byte tile, with plain
    conversions); plain: the old tile (KV_INT4_PLAIN), kept for timing, still right."""
    from halinfer.kernels.triton import tl_math

    magic, words, split = TILES[tile]
    monkeypatch.setattr(tl_math, "INT4_MAGIC", magic)
    monkeypatch.setattr(tl_math, "INT4_WORDS", words)
    monkeypatch.setattr(tl_math, "INT4_SPLIT", split)
    _attend(target, gen, "NHD", "int4", splits, name, seqs, Hq, Hk, D, Dv, bs, spread=(3.0, 4.0))


def _split_planes_expected(dtype, D, Dv, mla, split):
    """The planes a split tile should run with (0: none), from the rules in tl_math / attention_args,
    restated: dots need >= 16 channels a plane; 4 / 8 planes read int32 words (16-bit q, D % 8 == 0)."""
    if mla or not split:
        return 0
    width = min(max(16, 1 << (D - 1).bit_length()), max(16, 1 << (Dv - 1).bit_length()))
    words = dtype in (torch.float16, torch.bfloat16) and D % 8 == 0 and Dv % 8 == 0
    fits = [n for n in (2, 4, 8) if width // n >= 16 and (n == 2 or words) and n <= split]
    return max(fits, default=0)


SPLIT_CASES = [  # as SPREAD_CASES: head dims 64 / 128 (and padded ones), GQA 1..7, odd lengths, block sizes
    ("decode_d128_g4", [(37, 1), (100, 1), (3, 1), (0, 1)], 16, 4, 128, 128, 16, None),
    ("decode_d128_g7_split", [(70, 1), (129, 1)], 14, 2, 128, 128, 8, 3),
    ("decode_d64_g1", [(21, 1), (64, 1), (5, 1)], 4, 4, 64, 64, 32, None),
    ("decode_d64_g3_split", [(90, 1), (17, 1)], 6, 2, 64, 64, 16, 4),
    ("decode_d80", [(33, 1), (7, 1)], 8, 2, 80, 80, 8, None),          # padded to 128: planes masked
    ("decode_d36", [(21, 1), (5, 1)], 4, 2, 36, 36, 16, None),         # no whole words: 2 planes
    ("decode_d128_mla", [(45, 1)], 4, 1, 128, 64, 16, None),           # MLA: not split
    ("prefill_d128_g4", [(11, 23), (0, 9), (50, 1)], 8, 2, 128, 128, 16, None),
    ("prefill_d64_g1", [(19, 31), (0, 17)], 3, 3, 64, 64, 8, None),
    ("prefill_d96_dv64", [(5, 20)], 6, 3, 96, 64, 32, None),
]


@pytest.mark.parametrize("split", [2, 4, 8])
@pytest.mark.parametrize("name,seqs,Hq,Hk,D,Dv,bs,splits", SPLIT_CASES, ids=[c[0] for c in SPLIT_CASES])
def test_int4_split_tiles(target, gen, monkeypatch, split, name, seqs, Hq, Hk, D, Dv, bs, splits):
    """The split int4 tiles (tl_math.INT4_SPLIT: the nibble planes never put back in channel
    order, one dot per plane) over per-token scales three decades apart, against the reference;
    and the tile the launchers picked is the one the case should get (so a fallback cannot hide
    the mode under test)."""
    from halinfer.kernels.triton import attention_args, tl_math

    monkeypatch.setattr(tl_math, "INT4_SPLIT", split)
    picked = []
    real = attention_args.AttnArgs.kernel_kv_mode
    monkeypatch.setattr(attention_args.AttnArgs, "kernel_kv_mode",
                        property(lambda self: picked.append(real.fget(self)) or picked[-1]))
    _attend(target, gen, "NHD", "int4", splits, name, seqs, Hq, Hk, D, Dv, bs, spread=(3.0, 4.0))
    planes = _split_planes_expected(target.dtype, D, Dv, name.endswith("mla"), split)
    mode = {0: None, 2: tl_math.KV_INT4_SPLIT2, 4: tl_math.KV_INT4_SPLIT4, 8: tl_math.KV_INT4_SPLIT8}[planes]
    if mode is None:
        assert picked and all(m in (tl_math.KV_INT4, tl_math.KV_INT4_WORDS) for m in picked), picked
    else:
        assert picked and all(m == mode for m in picked), f"wanted tile {mode}, launched {picked}"


def _asm_modes(target, unpacks_words):
    """The ASM values a probe is compiled with: the plain-Triton unpack everywhere, and where it is
    used (word / 4- and 8-plane tiles) the inline-PTX one too when compiled for CUDA."""
    return [False] + ([True] if unpacks_words and not target.interp and torch.version.hip is None else [])


# triton.language and kernels/triton/tl_math for _tile_probe, set by test_int4_tiles_hold_nibbles_plus_bias:
# triton is imported in tests only (after the conftest has chosen compiled or interpreted).
tl = tl_math = None


def _tile_probe(c_ptr, out_ptr, n_rows, stride_row, NCH: tl.constexpr, C: tl.constexpr, N: tl.constexpr,
                KV: tl.constexpr, OUT_DT: tl.constexpr, ASM: tl.constexpr):
    # made a kernel (triton.jit) by test_int4_tiles_hold_nibbles_plus_bias
    r = tl.arange(0, N)
    ch = tl.arange(0, C)
    t = tl_math._load_tile(c_ptr, r * stride_row, ch, r < n_rows, NCH, KV, OUT_DT, ASM)
    tl.store(out_ptr + r[:, None] * C + ch[None, :], t.to(tl.float32))


@pytest.mark.parametrize("D", [128, 80, 36, 6])
def test_int4_tiles_hold_nibbles_plus_bias(target, gen, D):
    """The int4 tiles alone (bf16 included: no dot involved), from a poisoned cache: channel 2j
    is byte j's low nibble, 2j + 1 its high one, plus the 16-bit dtypes' bias; rows and channels
    outside the masks read as nibble 0.  Compiled: the inline-PTX unpack (tl_math.INT4_ASM) too."""
    import triton
    import triton.language

    from halinfer.kernels.triton import tl_math

    globals().update(tl=triton.language, tl_math=tl_math)
    tile_kernel = triton.jit(_tile_probe)
    dev = target.device
    dts = [target.dtype] + ([torch.bfloat16] if target.dtype == torch.float16 else [])
    N, C, rows, stride = 16, max(16, 1 << (D - 1).bit_length()), 11, D // 2 + 4
    cache = torch.full(((N + 1) * stride,), 0xFF, dtype=torch.uint8)
    stored = torch.randint(0, 256, (rows, D // 2), dtype=torch.uint8, generator=gen)
    cache[:rows * stride].view(rows, stride)[:, :D // 2] = stored
    nib = torch.stack((stored & 15, stored >> 4), -1).flatten(-2).float()
    for dt in dts:
        bias = 16.0 if dt in (torch.float16, torch.bfloat16) else 0.0
        kinds = [tl_math.KV_INT4]
        if not (target.interp and dt == torch.bfloat16):   # the interpreter's int -> bf16 cast is wrong
            kinds.append(tl_math.KV_INT4_PLAIN)
        if bias and D % 8 == 0:
            kinds.append(tl_math.KV_INT4_WORDS)
        for kind, asm in [(k, a) for k in kinds for a in _asm_modes(target, k == tl_math.KV_INT4_WORDS)]:
            out = torch.full((N, C), float("nan"), device=dev)
            tdt = {torch.float16: tl.float16, torch.bfloat16: tl.bfloat16, torch.float32: tl.float32}[dt]
            tile_kernel[(1,)](cache.to(dev), out, rows, stride, NCH=D, C=C, N=N, KV=kind, OUT_DT=tdt, ASM=asm)
            got = out.cpu()
            add = 0.0 if kind == tl_math.KV_INT4_PLAIN else bias
            want = torch.full((N, C), add)
            want[:rows, :D] += nib
            assert torch.equal(got, want), f"{dt} tile {kind} asm {asm}: {int((got != want).sum())} elements differ"


def _planes_probe(c_ptr, out_ptr, n_rows, stride_row, NCH: tl.constexpr, C: tl.constexpr, N: tl.constexpr,
                  NP: tl.constexpr, OUT_DT: tl.constexpr, ASM: tl.constexpr):
    # made a kernel by test_int4_split_planes_hold_their_channels: each plane stored at its channels
    r = tl.arange(0, N)
    t = tl_math._int4_planes(c_ptr, r * stride_row, r < n_rows, NCH, C, NP, OUT_DT, ASM)
    for i in tl.static_range(NP):
        c = tl_math._plane_channels(C // NP, NP, i)
        tl.store(out_ptr + r[:, None] * C + c[None, :], t[i].to(tl.float32))


@pytest.mark.parametrize("D", [256, 128, 80, 64, 36])
def test_int4_split_planes_hold_their_channels(target, gen, D):
    """The split tiles' planes alone, bit for bit (bf16 included): plane i of NP, put back at the
    channels _plane_channels names, is the nibble tile (channel 2j: byte j's low nibble) plus the
    16-bit dtypes' bias; masked rows and channels read as nibble 0."""
    import triton
    import triton.language

    from halinfer.kernels.triton import tl_math

    globals().update(tl=triton.language, tl_math=tl_math)
    kernel = triton.jit(_planes_probe)
    dev = target.device
    dts = [target.dtype] + ([torch.bfloat16] if target.dtype == torch.float16 else [])
    N, C, rows, stride = 16, max(16, 1 << (D - 1).bit_length()), 11, D // 2 + 4
    cache = torch.full(((N + 1) * stride,), 0xFF, dtype=torch.uint8)
    stored = torch.randint(0, 256, (rows, D // 2), dtype=torch.uint8, generator=gen)
    cache[:rows * stride].view(rows, stride)[:, :D // 2] = stored
    nib = torch.stack((stored & 15, stored >> 4), -1).flatten(-2).float()
    for dt in dts:
        bias = 16.0 if dt in (torch.float16, torch.bfloat16) else 0.0
        for NP, asm in [(n, a) for n in [2] + ([4, 8] if bias and D % 8 == 0 else []) for a in _asm_modes(target, n > 2)]:
            out = torch.full((N, C), float("nan"), device=dev)
            tdt = {torch.float16: tl.float16, torch.bfloat16: tl.bfloat16, torch.float32: tl.float32}[dt]
            kernel[(1,)](cache.to(dev), out, rows, stride, NCH=D, C=C, N=N, NP=NP, OUT_DT=tdt, ASM=asm)
            want = torch.full((N, C), bias)
            want[:rows, :D] += nib
            got = out.cpu()
            assert torch.equal(got, want), f"{dt} {NP} planes asm {asm}: {int((got != want).sum())} elements differ"


def test_int4_tile_choice(monkeypatch):
    """Which int4 tile the launchers pass (attention_args): words (and the 4 / 8 plane split tiles)
    only where every row is whole, 4-byte aligned int32 words and the queries are 16-bit; the byte
    tile (2 planes) otherwise; split tiles only where each plane is >= 16 channels deep."""
    from halinfer.kernels.triton import tl_math
    from halinfer.kernels.triton.attention_args import attn_args

    def mode(dtype, d, offset=0, layout="NHD"):
        kv = _layer("int4", layout, 3, 16, 2, d, d, "cpu")
        if offset:   # a cache view that starts 2 bytes into its storage
            base = torch.zeros(kv.k.numel() + offset, dtype=torch.uint8)
            kv = LayerKV(base[offset:].view(kv.k.shape), kv.v, layout, kv.k_scale, kv.v_scale, quant="int4",
                         k_zero=kv.k_zero, v_zero=kv.v_zero)
        q = torch.zeros(1, 4, d, dtype=dtype)
        return attn_args(q, kv, sliding_window=None, chunk_size=None, soft_cap=None, alibi_slopes=None, sinks=None,
                         v_head_dim=None).kernel_kv_mode

    # auto: the split tile of 4 planes (tl_math.INT4_SPLIT) where padded head dims are >= 128
    assert mode(torch.float16, 128) == mode(torch.bfloat16, 80) == mode(torch.bfloat16, 256) \
        == mode(torch.float16, 96, layout="HND") == tl_math.KV_INT4_SPLIT4
    assert mode(torch.float16, 64) == tl_math.KV_INT4_WORDS
    assert mode(torch.float32, 128) == mode(torch.float16, 36) == tl_math.KV_INT4
    monkeypatch.setattr(tl_math, "INT4_SPLIT", 8)
    assert mode(torch.float16, 128) == tl_math.KV_INT4_SPLIT8
    assert mode(torch.float16, 64) == tl_math.KV_INT4_SPLIT4          # 8 planes of 8: too shallow
    assert mode(torch.float32, 128) == mode(torch.float16, 36) == mode(torch.bfloat16, 128, offset=2) \
        == tl_math.KV_INT4_SPLIT2                                       # no words: bytes
    assert mode(torch.float16, 6) == tl_math.KV_INT4                    # planes of 8
    monkeypatch.setattr(tl_math, "INT4_SPLIT", 2)
    assert mode(torch.float16, 128) == mode(torch.float32, 64) == tl_math.KV_INT4_SPLIT2
    monkeypatch.setattr(tl_math, "INT4_SPLIT", 0)
    assert mode(torch.float16, 128) == mode(torch.bfloat16, 80) == mode(torch.float16, 96, layout="HND") \
        == tl_math.KV_INT4_WORDS
    assert mode(torch.float32, 128) == mode(torch.float16, 36) == mode(torch.bfloat16, 128, offset=2) \
        == tl_math.KV_INT4
    monkeypatch.setattr(tl_math, "INT4_WORDS", False)
    assert mode(torch.float16, 128) == tl_math.KV_INT4
    monkeypatch.setattr(tl_math, "INT4_MAGIC", False)
    assert mode(torch.float16, 128) == mode(torch.float32, 36) == tl_math.KV_INT4_PLAIN
    monkeypatch.setattr(tl_math, "INT4_SPLIT", 4)                        # the old tile wins over a split
    assert mode(torch.float16, 128) == tl_math.KV_INT4_PLAIN


def test_inline_ptx_only_where_compiled_for_cuda(monkeypatch):
    """The kernels' ASM flag (tl_math.INT4_ASM): on only when the launcher says its Triton compiles
    PTX (not the interpreter; not MACA's table, whose Triton targets MetaX), and off for a process
    with HALINFER_INT4_ASM=0."""
    from halinfer.kernels.triton import tl_math
    from halinfer.kernels.triton.attention_args import attn_args
    from halinfer.kernels.triton.ops import TritonOps
    from halinfer.plugins.maca.ops import MacaOps

    kv = _layer("int4", "NHD", 3, 16, 2, 128, 128, "cpu")
    q = torch.zeros(1, 4, 128, dtype=torch.float16)

    def asm(**kw):
        return attn_args(q, kv, sliding_window=None, chunk_size=None, soft_cap=None, alibi_slopes=None, sinks=None,
                         v_head_dim=None, **kw).flags()["ASM"]

    monkeypatch.setattr(tl_math, "INT4_ASM", True)
    assert asm(inline_ptx=True) is (torch.version.hip is None)
    assert asm() is False and asm(inline_ptx=False) is False
    monkeypatch.setattr(tl_math, "INT4_ASM", False)
    assert asm(inline_ptx=True) is False
    assert TritonOps.inline_ptx is True and MacaOps.inline_ptx is False
