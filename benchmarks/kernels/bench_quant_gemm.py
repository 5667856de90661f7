"""Quantized GEMMs at Llama-3-8B shapes on a CUDA GPU: W4A16 GEMV (AWQ, GPTQ) at M = 1
and small M against bf16 torch matmul, and FP8 (block-scaled Triton kernel, per-channel
torch._scaled_mm) against bf16.

Shapes (K, N): qkv (4096, 6144), o (4096, 4096), gate_up (4096, 28672), down (14336, 4096).
Columns: median microseconds (triton.testing.do_bench), the bytes the op must read (packed
weights, scales, zeros; bf16 weights for the baseline) over its time in GB/s, and the
speed-up over bf16.  --sweep tries a few GEMV tile configs at M = 1 and prints the best,
to pick kernels/triton/w4a16.py's defaults from.

Usage: python benchmarks/kernels/bench_quant_gemm.py [--sweep] [--m 1,4,16]
"""
from __future__ import annotations

import argparse

import torch
import triton.testing

from halinfer.core.ops.gptq import gptq_pack_cols, gptq_pack_rows
from halinfer.core.ops.quant import awq_pack
from halinfer.kernels.triton import scaled_gemm, w4a16
from halinfer.kernels.triton.ops import TritonOps

SHAPES = {"qkv": (4096, 6144), "o": (4096, 4096), "gate_up": (4096, 28672), "down": (14336, 4096)}
GROUP = 128


def bench(fn) -> float:
    return triton.testing.do_bench(fn, warmup=10, rep=40, return_mode="median") * 1e3   # us


def w4_inputs(K, N, dev):
    g = torch.Generator().manual_seed(K + N)
    q = torch.randint(0, 16, (K, N), generator=g)
    z = torch.randint(0, 16, (K // GROUP, N), generator=g)
    s = (torch.rand(K // GROUP, N, generator=g) * 0.02).to(dev, torch.bfloat16)
    awq = (awq_pack(q).to(dev), s, awq_pack(z).to(dev))
    gptq = (gptq_pack_rows(q, 4).to(dev), gptq_pack_cols(z, 4).to(dev), s, (torch.arange(K) // GROUP).int().to(dev))
    return awq, gptq


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--m", default="1,4,16")
    ap.add_argument("--sweep", action="store_true")
    ap.add_argument("--no-fp8", action="store_true")
    args = ap.parse_args()
    dev = "cuda"
    ops = TritonOps()
    print(f"{torch.cuda.get_device_name()}  torch {torch.__version__}  triton {triton.__version__}")
    print(f"{'op':26s} {'M':>4s} {'us':>9s} {'GB/s':>8s} {'vs bf16':>8s}")
    for name, (K, N) in SHAPES.items():
        (qw, s, qz), (gqw, gqz, gs, gidx) = w4_inputs(K, N, dev)
        wb = torch.randn(N, K, device=dev, dtype=torch.bfloat16)
        w4_bytes = qw.numel() * 4 + s.numel() * 2 + qz.numel() * 4
        for M in [int(m) for m in args.m.split(",")]:
            x = torch.randn(M, K, device=dev, dtype=torch.bfloat16)
            t_bf16 = bench(lambda: torch.nn.functional.linear(x, wb))
            print(f"{'bf16 ' + name:26s} {M:4d} {t_bf16:9.1f} {wb.numel() * 2 / t_bf16 / 1e3:8.0f} {1.0:8.2f}")
            for fmt, fn in (("awq", lambda: ops.w4a16_linear(x, qw, s, qz, GROUP)),
                            ("gptq", lambda: ops.gptq_linear(x, gqw, gqz, gs, gidx, 4))):
                t = bench(fn)
                print(f"{fmt + ' ' + name:26s} {M:4d} {t:9.1f} {w4_bytes / t / 1e3:8.0f} {t_bf16 / t:8.2f}")
    for name, (K, N) in ({} if args.no_fp8 else SHAPES).items():
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

    # last, so that a timeout cuts the tuning sweep and not the tables above
    for name, (K, N) in (SHAPES if args.sweep else {}).items():
        (qw, s, qz), _ = w4_inputs(K, N, dev)
        x = torch.randn(1, K, device=dev, dtype=torch.bfloat16)
        res = [(bench(lambda: ops.w4a16_linear(x, qw, s, qz, GROUP)), "default")]
        for cfg in [(128, 32, 4), (64, 64, 4), (128, 64, 4), (128, 128, 4), (128, 128, 8), (256, 64, 4), (256, 128, 8),
                    (64, 128, 2), (128, 32, 2)]:
            w4a16.GEMV_CONFIG_OVERRIDE["config"] = cfg
            try:
                res.append((bench(lambda: ops.w4a16_linear(x, qw, s, qz, GROUP)), cfg))
            except Exception as e:  # noqa: BLE001 - a config that does not compile is reported
                print(f"  sweep {name} {cfg}: {type(e).__name__}: {str(e)[:120]}")
        w4a16.GEMV_CONFIG_OVERRIDE.clear()
        res.sort(key=lambda r: r[0])
        print(f"  sweep {name} M=1 (BLOCK_N, BLOCK_K, warps): " +
              ", ".join(f"{c}={t:.1f}us" for t, c in res[:4]))


if __name__ == "__main__":
    main()
