"""Quantized GEMMs at Llama-3-8B shapes on a CUDA GPU: the W4A16 GEMV kernels (AWQ, GPTQ)
side by side at decode M against bf16 torch matmul, and FP8 (block-scaled Triton kernel,
per-channel torch._scaled_mm) against bf16.

Shapes (K, N): qkv (4096, 6144), o (4096, 4096), gate_up (4096, 28672), down (14336, 4096).
W4A16 rows: one per (shape, M, format: awq; gptq and gptq-act, the checkpoint's tensors into
GPTQ's kernels, plain and act-order g_idx; gptq-prep and gptq-act-prep, the same after
TritonOps.prepare_gptq, as a loaded model runs them: AWQ's kernels, act-order with one x
gather); columns per GEMV implementation (w4a16.GEMV_IMPL
"v1", "v2", and "v2p" = v2 with its plain-Triton nibble unpack instead of the inline PTX):
median microseconds (triton.testing.do_bench), the bytes the op must read (packed weights,
scales, zeros) over its time in GB/s, and the largest error against the torch reference
(core.ops on the same GPU inputs) relative to the reference's largest magnitude, so that a
wrong kernel shows beside a fast one.  "dense" is torch's linear on a bf16 weight.

--impl picks the columns (default v1,v2,v2p; the AWQ-only v3 variants of w4a16_v3.py, e.g.
v3a, run the GPTQ rows through v2, as the selector does); --fmt awq / gptq / awq,gptq and
--shapes cut the rows.  HALINFER_W4A16_GEMV must be unset (it overrides the columns' choice).

--sweep (last, so that a timeout cuts it and not the tables) tries v2 tile configs
(BLOCK_N, BLOCK_K, warps, stages[, splits]) per shape at M = 1 and 16 and prints the best
four, to pick kernels/triton/w4a16.py's defaults from; --sweep-v1 does the same for v1's
(BLOCK_N, BLOCK_K, warps); --sweep-v3 does it for each v3 variant named in --impl (AWQ, M = 1,
configs (BLOCK_N, BLOCK_K, warps, stages, splits or None = one wave, maxnreg or 0 = none)),
no config starting after --sweep-budget seconds (all variants together).

--cold N (MB): every timed graph streams at least N MB of distinct weights (AWQ rows and the
dense column rotate through copies), so that no call finds its weights in the 50 MB L2, as a
model's layers do not; without it the same weights are replayed and qkv / o / down (8-29 MB)
time from L2.  AWQ only.

--impl v4 (and --sweep-v3 with it) times w4a16_v4.py's one-dot-a-trip GEMV beside v3a.

Usage: python benchmarks/kernels/bench_quant_gemm.py [--cold 256] [--impl v2,v3a] [--fmt awq] [--shapes gate_up,down]
          [--sweep] [--sweep-v1] [--sweep-v3] [--sweep-budget 80] [--m 1,4,16] [--no-fp8]
"""
from __future__ import annotations

import argparse
import itertools
import os
import sys
import time

import torch
import triton.testing

from halinfer.core.ops import Ops
from halinfer.core.ops.gptq import gptq_pack_cols, gptq_pack_rows
from halinfer.core.ops.quant import awq_pack
from halinfer.kernels.triton import scaled_gemm, w4a16, w4a16_v3, w4a16_v4
from halinfer.kernels.triton.ops import TritonOps

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from timing import device_us  # noqa: E402

SHAPES = {"qkv": (4096, 6144), "o": (4096, 4096), "gate_up": (4096, 28672), "down": (14336, 4096)}
GROUP = 128
DT = torch.bfloat16   # the activations' (and scales') dtype
IMPLS = {"v1": ("v1", True), "v2": ("v2", True), "v2p": ("v2", False),   # name -> (GEMV_IMPL, GEMV_V2_ASM)
         **{v: (v, True) for v in w4a16_v3.VARIANTS}, "v4": ("v4", True)}
COLS = ["v1", "v2", "v2p"]     # the table's columns (--impl)
FMTS = ["awq", "gptq"]
REF = Ops()
COLD_MB = [0]  # --cold


def bench(fn) -> float:
    reps = getattr(fn, "copies", 10)
    return device_us(fn, reps=reps)   # us of device time (CUDA-graph replays): a GEMV is a few us, its host launch more


def copies_for(nbytes: int) -> int:
    """How many weight copies make a graph of one call each stream COLD_MB (1: not --cold)."""
    return max(10, -(-COLD_MB[0] * 2 ** 20 // nbytes)) if COLD_MB[0] else 1


def rotating(fns):
    """One callable running fns in turn (a new weight copy each call); bench replays each once."""
    if len(fns) == 1:
        return fns[0]
    it = itertools.cycle(fns)
    fn = lambda: next(it)()   # noqa: E731
    fn.copies = len(fns)
    return fn


def w4_inputs(K, N, dev):
    """AWQ and GPTQ tensors of one weight; GPTQ also with an act-order g_idx (a permutation of
    the plain groups, as GPTQ's desc_act writes it)."""
    g = torch.Generator().manual_seed(K + N)
    q = torch.randint(0, 16, (K, N), generator=g)
    z = torch.randint(0, 16, (K // GROUP, N), generator=g)
    s = (torch.rand(K // GROUP, N, generator=g) * 0.02).to(dev, DT)
    awq = (awq_pack(q).to(dev), s, awq_pack(z).to(dev))
    plain = (torch.arange(K) // GROUP).int()
    act = plain[torch.randperm(K, generator=g)]
    gptq = {kind: (gptq_pack_rows(q, 4).to(dev), gptq_pack_cols(z, 4).to(dev), s, gi.to(dev))
            for kind, gi in (("plain", plain), ("act", act))}
    return awq, gptq


def set_impl(name):
    w4a16.GEMV_IMPL, w4a16.GEMV_V2_ASM = IMPLS[name]


def rel_err(y, ref) -> float:
    return float((y.float() - ref.float()).abs().max() / ref.float().abs().max().clamp(min=1e-6))


def w4_ops(ops, x, awq, gptq, prepared):
    """op name -> (the kernel call, the reference call).  gptq / gptq-act: the checkpoint's
    tensors straight into gptq_linear (GPTQ's own kernels; act-order on v1); gptq-prep /
    gptq-act-prep: as a model runs them, through ops.prepare_gptq once (4-bit GPTQ re-laid into
    AWQ's layout, act-order rows sorted and x gathered by perm: AWQ's kernels)."""
    qw, s, qz = awq
    n = copies_for(qw.numel() * 4 + s.numel() * 2 + qz.numel() * 4)
    cps = [awq] + [tuple(t.clone() for t in awq) for _ in range(n - 1)]
    out = {"awq": (rotating([lambda c=c: ops.w4a16_linear(x, c[0], c[1], c[2], GROUP) for c in cps]),
                   lambda: REF.w4a16_linear(x, qw, s, qz, GROUP))}
    for kind, name in (("plain", "gptq"), ("act", "gptq-act")):
        t = gptq[kind]
        ref = (lambda t=t: REF.gptq_linear(x, *t, 4))
        out[name] = (lambda t=t: ops.gptq_linear(x, *t, 4)), ref
        out[name + "-prep"] = (lambda p=prepared[kind]: ops.gptq_linear(x, **p, bits=4)), ref
    # --fmt awq / gptq: a format keeps its act-order and prepared rows
    return {k: v for k, v in out.items() if k.split("-")[0] in FMTS}


def prepare(ops, gptq):
    return {kind: ops.prepare_gptq(*t, 4) for kind, t in gptq.items()}


def w4_table(ops, dev, ms):
    print(f"{'op':22s} {'M':>3s} {'dense us':>8s}  " + "  ".join(f"{n + ' us':>8s} {'GB/s':>6s} {'err':>7s}" for n in COLS)
          + "   v2 vs v1  v2 vs dense" + "".join(f"  {n} vs v2" for n in COLS if n.startswith("v3")))
    for name, (K, N) in SHAPES.items():
        awq, gptq = w4_inputs(K, N, dev)
        prepared = prepare(ops, gptq)
        qw, s, qz = awq
        w4_bytes = qw.numel() * 4 + s.numel() * 2 + qz.numel() * 4
        wbs = [torch.randn(N, K, device=dev, dtype=DT) for _ in range(copies_for(N * K * 2))]
        for M in ms:
            x = torch.randn(M, K, device=dev, dtype=DT)
            t_bf16 = bench(rotating([lambda w=w: torch.nn.functional.linear(x, w) for w in wbs]))
            for fmt, (fn, ref_fn) in w4_ops(ops, x, awq, gptq, prepared).items():
                ref = ref_fn()
                cells, t = [], {}
                for impl in COLS:
                    set_impl(impl)
                    try:
                        err = rel_err(fn(), ref)
                        t[impl] = bench(fn)
                        cells.append(f"{t[impl]:8.1f} {w4_bytes / t[impl] / 1e3:6.0f} {err:7.1e}")
                    except Exception as e:  # noqa: BLE001 - a kernel that fails to build is reported, the rest run
                        cells.append(f"{'FAILED':>8s} {type(e).__name__[:14]:>14s}")
                set_impl("v2")
                speed = (f"{t['v1'] / t['v2']:9.2f}x" if "v1" in t and "v2" in t else f"{'-':>10s}")
                speed += f" {t_bf16 / t['v2']:10.2f}x" if "v2" in t else f" {'-':>10s}"
                speed += "".join(f"  {t['v2'] / t[n]:7.2f}x" for n in COLS if n.startswith("v3") and n in t and "v2" in t)
                print(f"{fmt + ' ' + name:22s} {M:3d} {t_bf16:8.1f}  " + "  ".join(cells) + "  " + speed)


def fp8_table(ops, dev):
    for name, (K, N) in SHAPES.items():
        g = torch.Generator().manual_seed(N)
        w8 = (torch.randn(N, K, generator=g) * 50).clamp(-448, 448).to(torch.float8_e4m3fn).to(dev)
        wb = torch.randn(N, K, device=dev, dtype=torch.bfloat16)
        blk = (torch.rand(N, K // 128, generator=g) * 1e-3).to(dev)
        ch = (torch.rand(N, 1, generator=g) * 1e-3).to(dev)
        for M in (1, 16, 512):
            x = torch.randn(M, K, device=dev, dtype=torch.bfloat16)
            t_bf16 = bench(lambda: torch.nn.functional.linear(x, wb))
            tb = bench(lambda: ops.fp8_linear(x, w8, blk, 128))
            tc = bench(lambda: ops.fp8_linear(x, w8, ch, K))
            mm = "torch._scaled_mm" if not scaled_gemm._SCALED_MM_BROKEN else \
                f"triton (scaled_mm refused: {list(scaled_gemm._SCALED_MM_BROKEN.values())[0][:80]})"
            print(f"fp8 {name:8s} M={M:4d}  bf16 {t_bf16:8.1f}us  block128 {tb:8.1f}us ({t_bf16 / tb:.2f}x)  "
                  f"per-channel[{mm}] {tc:8.1f}us ({t_bf16 / tc:.2f}x)")


V2_SWEEP = [(256, 128, 4, 4), (256, 128, 4, 3), (128, 128, 4, 4), (256, 64, 4, 4), (256, 128, 8, 4),
            (128, 128, 4, 3), (256, 128, 4, 4, 8), (256, 128, 4, 4, 16), (128, 128, 4, 4, 8), (256, 128, 4, 2)]
V1_SWEEP = [(128, 32, 4), (64, 64, 4), (128, 64, 4), (128, 128, 4), (128, 128, 8), (256, 64, 4), (256, 128, 8),
            (64, 128, 2), (128, 32, 2)]


# v3 (BLOCK_N, BLOCK_K, warps, stages, splits (None: one wave), maxnreg (0: none)): the default
# first, then the register cap off (2 programs an SM), fewer stages, smaller K tiles
V3_SWEEP = {"v3a": [(256, 128, 4, 4, None, 0), (256, 128, 4, 3, None, 168), (256, 64, 4, 6, None, 168),
                    (256, 128, 4, 4, 8, 168), (256, 128, 4, 4, 2, 168), (256, 128, 4, 4, 4, 168),
                    (256, 128, 4, 4, 16, 168), (128, 128, 4, 4, None, 168), (128, 128, 4, 4, 16, 168),
                    (256, 64, 4, 6, 16, 168), (128, 64, 4, 6, None, 168)],
            "v3c": [(256, 128, 4, 4, None, 0), (256, 64, 4, 6, None, 168)],
            # v4 (BLOCK_N, BLOCK_K, warps, stages, splits): sm_90 SASS (sass_stats.py --variant v4) has
            # 128x64x4 at 105 registers, no spill; 256x128 at 255 with a stack
            "v4": [(128, 64, 4, 4, None), (128, 64, 4, 3, None), (128, 128, 4, 3, None), (256, 64, 4, 3, None),
                   (256, 64, 8, 3, None), (128, 64, 4, 4, 16), (128, 64, 4, 4, 8), (256, 128, 4, 3, None)]}


def sweep(ops, dev, impl, configs, override, ms, deadline=None):
    """deadline: time.time() after which no further config starts."""
    set_impl(impl)
    for name, (K, N) in SHAPES.items():
        if deadline is not None and time.time() > deadline:
            break
        awq, gptq = w4_inputs(K, N, dev)
        prepared = prepare(ops, gptq)
        for M in ms:
            x = torch.randn(M, K, device=dev, dtype=DT)
            for fmt, (fn, ref_fn) in w4_ops(ops, x, awq, gptq, prepared).items():
                ref = ref_fn()
                res = [(bench(fn), "default", rel_err(fn(), ref))]
                for cfg in configs:
                    if deadline is not None and time.time() > deadline:
                        print(f"  sweep {impl}: --sweep-budget spent, stopping")
                        break
                    override["config"] = cfg
                    try:
                        err = rel_err(fn(), ref)
                        res.append((bench(fn), cfg, err))
                    except Exception as e:  # noqa: BLE001 - a config that does not compile is reported
                        print(f"  sweep {impl} {fmt} {name} {cfg}: {type(e).__name__}: {str(e)[:120]}")
                    override.clear()
                res.sort(key=lambda r: r[0])
                print(f"  sweep {impl} {fmt} {name} M={M} (BLOCK_N, BLOCK_K, warps[, stages, splits]): "
                      + ", ".join(f"{c}={t:.1f}us" + (f" (err {e:.0e}!)" if e > 2e-2 else "") for t, c, e in res[:int(os.environ.get("SWEEP_TOP", "4"))]))
    set_impl("v2")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--m", default="1,4,16")
    ap.add_argument("--sweep", action="store_true")
    ap.add_argument("--sweep-v1", action="store_true")
    ap.add_argument("--no-fp8", action="store_true")
    ap.add_argument("--impl", default=",".join(COLS))
    ap.add_argument("--fmt", default="awq,gptq")
    ap.add_argument("--shapes", default=",".join(SHAPES))
    ap.add_argument("--sweep-v3", action="store_true")
    ap.add_argument("--sweep-budget", type=float, default=70.0, help="seconds for all --sweep-v3 variants")
    ap.add_argument("--cold", type=int, default=0, help="MB of distinct weights each timed graph streams")
    ap.add_argument("--v3-configs", default=None,
                    help="--sweep-v3's configs instead of V3_SWEEP's: 'BN,BK,W,S,SPLITS,MAXNREG;...' (SPLITS 0: one wave)")
    args = ap.parse_args()
    COLD_MB[0] = args.cold
    if args.cold:
        args.fmt = "awq"
    if os.environ.get("HALINFER_W4A16_GEMV"):
        sys.exit("unset HALINFER_W4A16_GEMV: it overrides the columns' GEMV choice")
    COLS[:] = args.impl.split(",")
    FMTS[:] = args.fmt.split(",")
    for name in [n for n in SHAPES if n not in args.shapes.split(",")]:
        del SHAPES[name]
    dev = "cuda"
    ops = TritonOps()
    print(f"{torch.cuda.get_device_name()}  torch {torch.__version__}  triton {triton.__version__}")
    w4_table(ops, dev, [int(m) for m in args.m.split(",")])
    if not args.no_fp8:
        fp8_table(ops, dev)
    # last, so that a timeout cuts the tuning sweeps and not the tables above
    if args.sweep:
        sweep(ops, dev, "v2", V2_SWEEP, w4a16.GEMV_V2_CONFIG_OVERRIDE, (1,))
    if args.sweep_v1:
        sweep(ops, dev, "v1", V1_SWEEP, w4a16.GEMV_CONFIG_OVERRIDE, (1,))
    if args.sweep_v3:
        FMTS[:] = ["awq"]
        v3s = [c for c in COLS if c.startswith("v3") or c == "v4"]
        if args.v3_configs:
            cfgs = [tuple(int(v) for v in c.split(",")) for c in args.v3_configs.split(";")]
            for v in v3s:
                V3_SWEEP[v] = [c[:4] + ((c[4] or None),) + c[5:] for c in cfgs]
        t0 = time.time()
        for i, v in enumerate(v3s):
            # an equal share of the budget each (what one leaves over goes to the next)
            share = (args.sweep_budget - (time.time() - t0)) / (len(v3s) - i)
            override = w4a16_v4.CONFIG_OVERRIDE if v == "v4" else w4a16_v3.CONFIG_OVERRIDE
            sweep(ops, dev, v, V3_SWEEP[v], override, (1,), deadline=time.time() + share)
        print(f"  sweep-v3 took {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
