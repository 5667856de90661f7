"""Decode attention at Llama-3-8B shapes: the Triton split-KV kernel vs torch.

Shapes: 32 query heads, 8 kv heads, head_dim 128, bf16, block size 16; batch
1/64/256 x context 512/2048, every sequence at the full context.
Baselines:
  torch-sdpa   gather each sequence's blocks into a dense [B, ctx, Hk, D] tensor,
               then F.scaled_dot_product_attention (GQA): what plain torch does.
  core-ref     halinfer's reference paged_attention (a Python loop over sequences).
Columns: median microseconds (triton.testing.do_bench, L2 flushed between runs),
the bytes the kernel must read (K and V of every sequence once) over its time,
and that as a share of a device-to-device copy's bandwidth measured here.
"triton-graph" replays the op from a CUDA graph whose metadata carries the
capacity bound a graph runner uses (max_seq_len 8192), as decode runs in the engine.

--kv none,int4,fp8,int8 (any subset) instead times decode over each KV cache dtype at batch
256 and 1024, context 1024 (--batches, --ctx change them), same heads, bf16 queries: median
microseconds a call (eager and replayed from a CUDA graph), the cache bytes read (values,
scales, int4 zeros) over that time, and the largest difference from torch-sdpa over the
dequantized cache.  int4 alone is the default tile (kernels/triton/tl_math.py: INT4_SPLIT auto,
the 4-plane split tile at head dim 128); int4-words, int4-bytes and int4-plain the unsplit tiles
(the word tile, INT4_WORDS off, and INT4_MAGIC off: the tile from before, with an int->float
conversion per element); int4-split2 / -split4 / -split8 the split tiles of 2 (from bytes), 4 and
8 (from int32 words) channel planes, no interleave of the nibbles.

--prefetch 0,1,2 (with --kv) times each kind under each decode prefetch variant (kernels/triton/
tl_math.py KV_PREFETCH: 0 none, as before; 1 block-table entries a tile ahead; 2 whole tiles a tile
ahead in registers, Triton's pipeliner off); the default, auto, is the launcher's choice (1 for
quantized caches, 0 for the model dtype).  A --kv name may also carry its own, e.g. int8@0,int8@1.
--stages N forces the decode kernel's num_stages (attention_decode.DECODE_STAGES; 0: its choice).

Usage: python benchmarks/kernels/bench_decode.py [--json out.json]
       python benchmarks/kernels/bench_decode.py --kv none,int4,int4-bytes,int4-plain,fp8,int8 [--json out.json]
       python benchmarks/kernels/bench_decode.py --kv none,int4-words,int4-split2,int4-split4,int4-split8
       python benchmarks/kernels/bench_decode.py --kv none,int8,fp8,int4-words,int4-split4 --prefetch 0,1,2 --batches 256
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
import triton.testing
import triton.runtime.errors

from halinfer.core.attention import LayerKV, MetadataBuilder, StepInputs
from halinfer.core.ops import Ops
from halinfer.kernels.triton.ops import TritonOps

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from timing import device_us  # noqa: E402

HQ, HK, D, BS = 32, 8, 128, 16
DT = torch.bfloat16


def copy_bandwidth(dev) -> float:
    """Bytes read + written per second by a 1 GiB device-to-device copy."""
    a = torch.empty(1 << 29, dtype=torch.int16, device=dev).random_()
    b = torch.empty_like(a)
    ms = triton.testing.do_bench(lambda: b.copy_(a), warmup=50, rep=300, return_mode="median")
    return 2 * a.numel() * a.element_size() / (ms * 1e-3)


def _step_and_q(B, ctx, num_blocks, dev, gen):
    """Every sequence at the full context over blocks handed out in random order; one query each."""
    perm = torch.randperm(num_blocks - 1, generator=torch.Generator().manual_seed(B * ctx)) + 1
    tables = perm.view(B, ctx // BS).numpy().astype(np.int32)
    seq_lens = np.full(B, ctx, np.int32)
    pos = seq_lens - 1
    slots = tables[np.arange(B), pos // BS].astype(np.int64) * BS + pos % BS
    step = StepInputs(np.ones(B, np.int32), seq_lens, tables, slots, BS)
    return step, torch.randn(B, HQ, D, device=dev, dtype=DT, generator=gen)


def build(B, ctx, dev, gen):
    num_blocks = B * (ctx // BS) + 1
    kc = torch.randn(num_blocks, BS, HK, D, device=dev, dtype=DT, generator=gen)
    vc = torch.randn(num_blocks, BS, HK, D, device=dev, dtype=DT, generator=gen)
    step, q = _step_and_q(B, ctx, num_blocks, dev, gen)
    return q, LayerKV(kc, vc, "NHD"), step


def torch_sdpa(q, kv, meta, ctx):
    B = q.shape[0]
    bt = meta.block_tables.long()
    k = kv.k[bt].view(B, ctx, HK, D).transpose(1, 2)
    v = kv.v[bt].view(B, ctx, HK, D).transpose(1, 2)
    return F.scaled_dot_product_attention(q[:, :, None], k, v, scale=D ** -0.5, enable_gqa=True)[:, :, 0]


def graph_replay_us(fn, reps=10) -> float:
    return device_us(fn, reps)


KV_KINDS = {  # --kv name: (cache quantization, tl_math.INT4_MAGIC, tl_math.INT4_WORDS, tl_math.INT4_SPLIT)
    "none": (None, True, True, -1), "int8": ("int8", True, True, -1), "fp8": ("fp8", True, True, -1),
    "int4": ("int4", True, True, -1), "int4-words": ("int4", True, True, 0), "int4-bytes": ("int4", True, False, 0),
    "int4-plain": ("int4", False, False, 0), "int4-split2": ("int4", True, True, 2),
    "int4-split4": ("int4", True, True, 4), "int4-split8": ("int4", True, True, 8),
}


def build_quant(B, ctx, mode, dev, gen):
    """build()'s shapes over a cache of one KV dtype: random stored values and per-(token, head)
    scales (and int4 zeros) as store_kv would leave them."""
    if mode is None:
        return build(B, ctx, dev, gen)
    from halinfer.core.ops.kv_quant import kv_storage_dtype, kv_stored_dim

    nblk = ctx // BS
    num_blocks = B * nblk + 1
    shape = (num_blocks, BS, HK, kv_stored_dim(mode, D))

    def values():
        if mode == "int4":
            return torch.randint(0, 256, shape, device=dev, dtype=torch.uint8, generator=gen)
        if mode == "int8":
            return torch.randint(-127, 128, shape, device=dev, dtype=torch.int8, generator=gen)
        return (torch.randn(shape, device=dev, generator=gen) * 100).clamp(-448, 448).to(kv_storage_dtype(mode, DT))

    def scales():   # what store_kv gives N(0, 1) data: range / 15 for int4, amax / 127 or / 448
        base = {"int4": 6.0 / 15, "int8": 3.0 / 127, "fp8": 3.0 / 448}[mode]
        return base * (0.5 + torch.rand(shape[:-1], device=dev, generator=gen))

    zeros = (lambda: -3.0 + 0.5 * torch.randn(shape[:-1], device=dev, generator=gen)) if mode == "int4" else (
        lambda: None)
    kv = LayerKV(values(), values(), "NHD", scales(), scales(), quant=mode, k_zero=zeros(), v_zero=zeros())
    step, q = _step_and_q(B, ctx, num_blocks, dev, gen)
    return q, kv, step


def cache_bytes(kv: LayerKV) -> int:
    """Bytes of the cache tensors (values, scales, zeros) per block, K and V."""
    ts = [kv.k, kv.v, kv.k_scale, kv.v_scale, kv.k_zero, kv.v_zero]
    return sum(t[0].numel() * t.element_size() for t in ts if t is not None)


def dequantized(kv: LayerKV) -> LayerKV:
    if kv.quant is None:
        return kv
    from halinfer.core.ops.kv_quant import dequantize_kv

    def deq(c, s, z):
        out = torch.empty(*c.shape[:-1], D, device=c.device, dtype=DT)
        for i in range(0, c.shape[0], 4096):
            out[i:i + 4096] = dequantize_kv(c[i:i + 4096], s[i:i + 4096], None if z is None else z[i:i + 4096],
                                            kv.quant).to(DT)
        return out
    return LayerKV(deq(kv.k, kv.k_scale, kv.k_zero), deq(kv.v, kv.v_scale, kv.v_zero), "NHD")


def _kinds(args):
    """--kv x --prefetch -> [(label, kind, prefetch or None for the launcher's choice)], a kind's
    variants next to each other (they share its cache)."""
    pfs = [None if p == "auto" else int(p) for p in args.prefetch.split(",")]
    out = []
    for k in [k.strip() for k in args.kv.split(",") if k.strip()]:
        name, _, pf = k.partition("@")
        assert name in KV_KINDS, f"--kv {name!r}: known {', '.join(KV_KINDS)}"
        for p in ([int(pf)] if pf else pfs):
            out.append((name if p is None else f"{name}@{p}", name, p))
    return out


def main_kv(args, dev, gen, bw):
    from halinfer.kernels.triton import tl_math

    ops = TritonOps()
    rows = []
    kinds = _kinds(args)
    ctx = args.ctx
    # each kind under every --tiles x --stages x --splits setting (the launcher's defaults: "" / 0 / auto)
    settings = [(t, int(st), None if ns == "auto" else int(ns), a != "0") for t in args.tiles.split(",")
                for st in str(args.stages).split(",") for ns in args.splits.split(",") for a in args.asm.split(",")]
    for B in [int(b) for b in args.batches.split(",")]:
        built = {}
        for label, name, pf in kinds:
            mode, magic, words, split = KV_KINDS[name]
            if mode not in built:
                built.clear()
                torch.cuda.empty_cache()
                built[mode] = build_quant(B, ctx, mode, dev, gen)
            q, kv, step = built[mode]
            for tile, stages, ns, asm in settings:
                if not asm and mode != "int4":
                    continue   # the inline PTX is the int4 unpack's only
                ops.decode_splits = ns
                saved_asm, tl_math.INT4_ASM = tl_math.INT4_ASM, asm
                try:
                    r = _time_kind(args, ops, q, kv, step, label if asm else label + "-noptx", B, ctx, magic, words,
                                   split, pf, tile, stages, dev, bw)
                    r["splits"] = ns or "auto"
                    rows.append(r)
                except triton.runtime.errors.OutOfResources as e:
                    # a sweep point that does not fit (shared memory / registers) is reported, not fatal
                    print(f"{label} tile {tile or 'auto'} stages {stages} splits {ns or 'auto'}: {e}")
                finally:
                    ops.decode_splits = None
                    tl_math.INT4_ASM = saved_asm
                torch.cuda.synchronize()
        built.clear()
        torch.cuda.empty_cache()
    print(f"{'kv':>13} {'tile':>6} {'st':>2} {'spl':>4} {'batch':>5} {'ctx':>5} {'us/call':>9} {'graph us':>9} {'MB read':>8} "
          f"{'TB/s':>6} {'of copy':>8} {'err':>8}")
    for r in rows:
        print(f"{r['kv']:>13} {r['tile'] or 'auto':>6} {r['stages']:>2} {r['splits']:>4} {r['batch']:>5} {r['ctx']:>5} "
              f"{r['triton_us']:>9.1f} {r['triton_graph_us']:>9.1f} "
              f"{r['kv_bytes'] / 1e6:>8.1f} {r['triton_TBps']:>6.2f} {r['frac_copy_bw']:>7.0%} "
              f"{r['max_abs_err_vs_sdpa']:>8.1e}")
    return rows


def _time_kind(args, ops, q, kv, step, label, B, ctx, magic, words, split, pf, tile, stages, dev, bw):
    from halinfer.kernels.triton import attention_decode, tl_math

    saved = tl_math.INT4_MAGIC, tl_math.INT4_WORDS, tl_math.INT4_SPLIT, tl_math.KV_PREFETCH
    saved_launch = attention_decode.DECODE_TILE, attention_decode.DECODE_STAGES
    tl_math.INT4_MAGIC, tl_math.INT4_WORDS, tl_math.INT4_SPLIT = magic, words, split
    tl_math.KV_PREFETCH = saved[3] if pf is None else pf
    attention_decode.DECODE_TILE, attention_decode.DECODE_STAGES = tile, stages
    try:
        meta = MetadataBuilder(dev, BS).build(step)
        gmeta = MetadataBuilder(dev, BS).build(step)
        gmeta.max_seq_len = 8192
        out = ops.paged_attention(q, kv, meta, scale=D ** -0.5)
        dq = dequantized(kv)
        err = float((out.float() - torch_sdpa(q, dq, meta, ctx).float()).abs().max())
        del dq
        t = triton.testing.do_bench(lambda: ops.paged_attention(q, kv, meta, scale=D ** -0.5),
                                    warmup=25, rep=args.rep, return_mode="median") * 1e3
        t_graph = graph_replay_us(lambda: ops.paged_attention(q, kv, gmeta, scale=D ** -0.5))
    finally:
        tl_math.INT4_MAGIC, tl_math.INT4_WORDS, tl_math.INT4_SPLIT, tl_math.KV_PREFETCH = saved
        attention_decode.DECODE_TILE, attention_decode.DECODE_STAGES = saved_launch
    nbytes = B * (ctx // BS) * cache_bytes(kv)
    return dict(kv=label, tile=tile, stages=stages, batch=B, ctx=ctx, triton_us=t, triton_graph_us=t_graph,
                kv_bytes=nbytes, triton_TBps=nbytes / (t * 1e-6) / 1e12, frac_copy_bw=nbytes / (t * 1e-6) / bw,
                max_abs_err_vs_sdpa=err)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", default=None)
    ap.add_argument("--kv", default=None, help=f"comma list of KV cache dtypes to time: {', '.join(KV_KINDS)}")
    ap.add_argument("--batches", default="256,1024", help="with --kv")
    ap.add_argument("--ctx", type=int, default=1024, help="with --kv")
    ap.add_argument("--prefetch", default="auto", help="with --kv: comma list of 0 / 1 / 2 / auto (tl_math.KV_PREFETCH)")
    ap.add_argument("--stages", default="0", help="with --kv: comma list of the decode kernel's num_stages (0: its choice)")
    ap.add_argument("--tiles", default="", help="with --kv: comma list of BLOCK_N x num_warps, e.g. 64x4,128x8 "
                    "(empty: the launcher's choice)")
    ap.add_argument("--splits", default="auto", help="with --kv: comma list of split-KV counts (auto: the launcher's)")
    ap.add_argument("--asm", default="1", help="with --kv: comma list of 1 / 0, the int4 unpack in inline PTX or "
                    "plain Triton (tl_math.INT4_ASM)")
    ap.add_argument("--rep", type=int, default=200, help="with --kv: do_bench's rep (ms)")
    args = ap.parse_args()
    dev = torch.device("cuda", 0)
    gen = torch.Generator(device=dev).manual_seed(0)
    ops, ref_ops = TritonOps(), Ops()
    bw = copy_bandwidth(dev)
    print(f"card: {torch.cuda.get_device_name(dev)}; copy bandwidth {bw / 1e12:.2f} TB/s (read+write)")
    if args.kv:
        rows = main_kv(args, dev, gen, bw)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(dict(card=torch.cuda.get_device_name(dev), copy_bw=bw, rows=rows), f, indent=1)
        return
    rows = []
    for ctx in (512, 2048):
        for B in (1, 64, 256):
            q, kv, step = build(B, ctx, dev, gen)
            meta = MetadataBuilder(dev, BS).build(step)
            gmeta = MetadataBuilder(dev, BS).build(step)
            gmeta.max_seq_len = 8192
            out = ops.paged_attention(q, kv, meta, scale=D ** -0.5)
            want = torch_sdpa(q, kv, meta, ctx)
            err = float((out.float() - want.float()).abs().max())
            t_tri = triton.testing.do_bench(lambda: ops.paged_attention(q, kv, meta, scale=D ** -0.5),
                                            warmup=25, rep=200, return_mode="median") * 1e3
            t_graph = graph_replay_us(lambda: ops.paged_attention(q, kv, gmeta, scale=D ** -0.5))
            t_sdpa = triton.testing.do_bench(lambda: torch_sdpa(q, kv, meta, ctx), warmup=10, rep=100,
                                             return_mode="median") * 1e3
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(2):
                ref_ops.paged_attention(q, kv, meta, scale=D ** -0.5)
            torch.cuda.synchronize()
            t_ref = (time.perf_counter() - t0) / 2 * 1e6
            nbytes = 2 * B * ctx * HK * D * 2
            row = dict(batch=B, ctx=ctx, triton_us=t_tri, triton_graph_us=t_graph, torch_sdpa_us=t_sdpa,
                       core_ref_us=t_ref, kv_bytes=nbytes, triton_TBps=nbytes / (t_tri * 1e-6) / 1e12,
                       frac_copy_bw=nbytes / (t_tri * 1e-6) / bw, max_abs_err_vs_sdpa=err)
            rows.append(row)
            del q, kv, out, want
            torch.cuda.empty_cache()
    hdr = (f"{'batch':>5} {'ctx':>5} {'triton us':>10} {'tri-graph us':>12} {'sdpa us':>9} {'core-ref us':>12} "
           f"{'TB/s':>6} {'of copy':>8} {'x sdpa':>7} {'err':>8}")
    print(hdr)
    for r in rows:
        print(f"{r['batch']:>5} {r['ctx']:>5} {r['triton_us']:>10.1f} {r['triton_graph_us']:>12.1f} "
              f"{r['torch_sdpa_us']:>9.1f} {r['core_ref_us']:>12.0f} {r['triton_TBps']:>6.2f} "
              f"{r['frac_copy_bw']:>7.0%} {r['torch_sdpa_us'] / r['triton_us']:>6.1f}x {r['max_abs_err_vs_sdpa']:>8.1e}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(card=torch.cuda.get_device_name(dev), copy_bw=bw, rows=rows), f, indent=1)


if __name__ == "__main__":
    main()
