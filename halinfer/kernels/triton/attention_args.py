"""What both paged-attention launchers pass their kernels: the caches' strides in
either layout, the value cache (the key cache itself for MLA), the scales (and int4
zeros) of a quantized cache, and
the optional features as (flag, value) pairs."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from halinfer.core.attention import LayerKV

from . import tl_math
from .common import next_pow2
from .store_kv import KV_MODES, cache_strides, check_zeros, scale_strides


@dataclass
class AttnArgs:
    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor              # the key cache for MLA (values are its first DV channels)
    k_scale: torch.Tensor        # a placeholder tensor when the cache is not quantized
    v_scale: torch.Tensor
    k_zero: torch.Tensor         # int4 only (read with the scales' strides); else a placeholder
    v_zero: torch.Tensor
    k_strides: tuple[int, int, int]   # block, token, head
    v_strides: tuple[int, int, int]
    ks_strides: tuple[int, int, int]
    vs_strides: tuple[int, int, int]
    Hq: int
    Hk: int
    D: int
    DV: int
    group: int
    block_size: int
    kv_mode: int                 # store_kv.KV_MODES: 0 model dtype, 1 int8, 2 fp8, 3 int4
    slopes: torch.Tensor
    sinks: torch.Tensor
    soft_cap: float
    window: int
    chunk: int
    int4_words: bool = False     # the int4 word tile fits (tl_math.KV_INT4_WORDS: 16-bit q, 4-byte rows)
    int4_split: int = 0          # the most planes an int4 split tile fits in: 0, 2, 4 or 8 (attn_args says when)
    asm: bool = False            # the kernels may use inline PTX (tl_math.INT4_ASM)

    # tl.dot wants every dim >= 16: tiny head dims are padded (masked) up to it.
    @property
    def block_d(self) -> int:
        return max(16, next_pow2(self.D))

    @property
    def block_dv(self) -> int:
        # A value tile narrower than its key tile (MLA's values are a prefix of the key rows) is
        # padded to at least min(BLOCK_D, 64) channels: at 64 x 64 key tiles with 32-wide values
        # (the tiny DeepSeek-V2 models' 40 / 32), triton 3.6's sm_90 prefill read shared memory out
        # of bounds in the P.V wgmma (compute-sanitizer: 18 errors; padded, none) -- the
        # intermittent MLA fault of docs/cuda_notes.md.  Tiles of 64 channels and more are unchanged.
        return max(16, next_pow2(self.DV), min(self.block_d, 64))

    def flags(self) -> dict:
        return dict(D=self.D, DV=self.DV, GROUP=self.group, BS=self.block_size,
                    BLOCK_D=self.block_d, BLOCK_DV=self.block_dv,
                    SOFTCAP=self.soft_cap > 0, ALIBI=self.slopes is not self.q,
                    SINKS=self.sinks is not self.q, WINDOW=self.window > 0, CHUNK=self.chunk > 0,
                    KV=self.kernel_kv_mode, ASM=self.asm)

    @property
    def kernel_kv_mode(self) -> int:
        """The kernels' KV: kv_mode, with int4 as the tile tl_math.INT4_MAGIC / INT4_WORDS pick
        (read at each launch, so a benchmark can time the tiles in one process)."""
        if self.kv_mode != tl_math.KV_INT4:
            return self.kv_mode
        if not tl_math.INT4_MAGIC:
            return tl_math.KV_INT4_PLAIN
        want = tl_math.INT4_SPLIT
        if want < 0:   # auto: 4 planes where each plane is >= 32 wide (tl_math says why), else no split
            want = 4 if self.int4_split >= 4 and min(self.block_d, self.block_dv) >= 128 else 0
        want = min(want, self.int4_split)   # 8 falls back to 4, 4 to 2, where they must
        if want >= 2:
            return {2: tl_math.KV_INT4_SPLIT2, 4: tl_math.KV_INT4_SPLIT4, 8: tl_math.KV_INT4_SPLIT8}[want]
        return tl_math.KV_INT4_WORDS if tl_math.INT4_WORDS and self.int4_words else tl_math.KV_INT4

    def cache_args(self) -> tuple:
        return (*self.k_strides, *self.v_strides, *self.ks_strides, *self.vs_strides)


def attn_args(q: torch.Tensor, kv: LayerKV, *, sliding_window, chunk_size, soft_cap, alibi_slopes, sinks,
              v_head_dim, inline_ptx: bool = False) -> AttnArgs:
    """inline_ptx: the kernels are compiled for CUDA (not interpreted, not another vendor's Triton),
    so tl_math.INT4_ASM may take effect."""
    T, Hq, D = q.shape
    if q.stride(-1) != 1:
        q = q.contiguous()
    hk = kv.k.shape[2] if kv.layout == "NHD" else kv.k.shape[1]
    assert Hq % hk == 0, f"{Hq} query heads is not a multiple of {hk} kv heads"
    assert kv.head_dim == D, f"query head dim {D} != key cache head dim {kv.head_dim}"
    mla = kv.v is None
    if mla:
        assert v_head_dim is not None, "MLA (kv.v is None) needs v_head_dim"
    v = kv.k if mla else kv.v
    mode = KV_MODES[kv.quant]
    dv = v_head_dim if mla else kv.v.shape[-1] * (2 if mode == 3 else 1)
    quant = kv.quantized
    ks = kv.k_scale if quant else q
    vs = (kv.k_scale if mla else kv.v_scale) if quant else q
    kz = kv.k_zero if mode == 3 else q
    vz = (kv.k_zero if mla else kv.v_zero) if mode == 3 else q
    check_zeros(kv.k_scale, kv.k_zero)
    if not mla:
        check_zeros(kv.v_scale, kv.v_zero)
    dev = q.device
    k_strides, v_strides = cache_strides(kv, kv.k), cache_strides(kv, v)
    # int4 rows read as int32 words: 16-bit queries, whole words per row, every row 4-byte aligned.
    words = (mode == 3 and q.dtype in (torch.float16, torch.bfloat16) and D % 8 == 0 and dv % 8 == 0
             and all(x % 4 == 0 for x in (*k_strides, *v_strides, kv.k.data_ptr(), v.data_ptr())))
    # int4 split tiles (tl_math.INT4_SPLIT): a plane of 1 / NP of the channels is one dot's depth,
    # and tl.dot wants >= 16, so 2 / 4 / 8 planes need padded head dims (block_d / block_dv) >= 32 /
    # 64 / 128 (Llama's 128: 16 deep at 8 planes), and 4 / 8 the word tile's conditions (16-bit q,
    # whole aligned words); fp32 queries fit 2 planes (converted nibbles), used when asked for (auto
    # takes 4 planes or none).  Not MLA (values a prefix of the key rows, head dims 576 / 512): it
    # keeps the tiles above, the split not examined there.
    bd, bdv = max(16, next_pow2(D)), max(16, next_pow2(dv))
    split = 0
    if mode == 3 and not mla and dv % 2 == 0 and min(bd, bdv) >= 32:
        split = 8 if words and min(bd, bdv) >= 128 else 4 if words and min(bd, bdv) >= 64 else 2
    return AttnArgs(
        q=q, k=kv.k, v=v, k_scale=ks, v_scale=vs, k_zero=kz, v_zero=vz,
        k_strides=k_strides, v_strides=v_strides,
        ks_strides=scale_strides(kv, kv.k_scale if quant else None),
        vs_strides=scale_strides(kv, (kv.k_scale if mla else kv.v_scale) if quant else None),
        Hq=Hq, Hk=hk, D=D, DV=dv, group=Hq // hk, block_size=kv.block_size, kv_mode=mode,
        # Absent features pass q as a never-read placeholder pointer.
        slopes=q if alibi_slopes is None else alibi_slopes.to(device=dev, dtype=torch.float32).contiguous(),
        sinks=q if sinks is None else sinks.to(device=dev, dtype=torch.float32).contiguous(),
        soft_cap=float(soft_cap or 0.0), window=int(sliding_window or 0), chunk=int(chunk_size or 0),
        int4_words=words, int4_split=split,
        asm=bool(inline_ptx and tl_math.INT4_ASM and torch.version.hip is None),
    )
