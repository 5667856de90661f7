"""8-bit GEMMs at Llama-3-8B shapes on a CUDA GPU, each path timed beside bf16 cuBLAS, with
its error against the core reference, to choose kernels/triton/scaled_gemm.py's defaults:

  fp8 block     block-scaled FP8 (1x128 activations, 128x128 weights): the Triton kernel
                vs cuBLASLt's block-scaled recipe through torch._scaled_mm
  fp8 channel   per-channel FP8 on torch._scaled_mm (rowwise)
  w8a8          int8: the Triton kernel vs torch._int_mm + epilogue
  act quant     per-token activation quantization: torch (the reference's ops) vs one launch

Times are device time (calls replayed from a CUDA graph) and include activation
quantization (what a linear layer pays).  --sweep tries Triton
tile configs for M > 64 (through scaled_gemm.CONFIG_OVERRIDE) and prints the best four.

Usage: python benchmarks/kernels/bench_8bit_gemm.py [--m 1,16,256,1024,4096] [--sweep]
"""
from __future__ import annotations

import argparse
import os
import sys

import torch
import triton
import triton.testing

from halinfer.core.ops import Ops
from halinfer.core.ops.fp8 import quant_per_token_group_fp8
from halinfer.core.ops.quant import quant_per_token_int8
from halinfer.kernels.triton import act_quant, scaled_gemm
from halinfer.kernels.triton.ops import TritonOps

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from timing import device_us  # noqa: E402

SHAPES = {"qkv": (4096, 6144), "o": (4096, 4096), "gate_up": (4096, 28672), "down": (14336, 4096)}
CONFIGS = [(128, 128, 128, 8, 3), (128, 128, 128, 4, 3), (128, 256, 128, 8, 3), (128, 256, 64, 8, 4),
           (256, 128, 128, 8, 3), (64, 128, 128, 4, 4), (128, 128, 64, 4, 4), (128, 64, 128, 4, 4)]


def bench(fn) -> float:
    return device_us(fn)


def rel(a, b) -> float:
    return float((a.float() - b.float()).abs().max() / b.float().abs().max())


def tflops(M, N, K, us) -> float:
    return 2 * M * N * K / us / 1e6


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--m", default="1,16,256,1024,4096")
    ap.add_argument("--sweep", action="store_true")
    args = ap.parse_args()
    dev = "cuda"
    ops, ref = TritonOps(), Ops()
    print(f"{torch.cuda.get_device_name()}  torch {torch.__version__} (CUDA {torch.version.cuda})  triton "
          f"{triton.__version__}")
    print(f"{'shape':8s} {'M':>5s} {'bf16 us':>8s} | {'fp8blk tri':>10s} {'fp8blk cublas':>13s} {'err':>7s} | "
          f"{'fp8ch':>7s} | {'w8a8 tri':>9s} {'w8a8 int_mm':>11s} {'err':>7s} | best TFLOP/s")
    ms = [int(m) for m in args.m.split(",")]
    for name, (K, N) in SHAPES.items():
        g = torch.Generator().manual_seed(N)
        wb = torch.randn(N, K, device=dev, dtype=torch.bfloat16)
        w8 = (torch.randn(N, K, generator=g) * 50).clamp(-448, 448).to(torch.float8_e4m3fn).to(dev)
        blk = (torch.rand(N // 128, K // 128, generator=g) * 1e-3 + 1e-4).repeat_interleave(128, 0).to(dev)
        ch = (torch.rand(N, 1, generator=g) * 1e-3 + 1e-4).to(dev)
        wi = torch.randint(-127, 128, (N, K), generator=g, dtype=torch.int8).to(dev)
        wis = (torch.rand(N, generator=g) * 1e-3).to(dev)
        for M in ms:
            x = torch.randn(M, K, device=dev, dtype=torch.bfloat16)
            t_bf = bench(lambda: torch.nn.functional.linear(x, wb))
            keep = scaled_gemm.BLOCK_SCALED_MM_MIN_M
            scaled_gemm.BLOCK_SCALED_MM_MIN_M = 1 << 30
            t_blk_tri = bench(lambda: ops.fp8_linear(x, w8, blk, 128))
            y_tri = ops.fp8_linear(x, w8, blk, 128)
            scaled_gemm.BLOCK_SCALED_MM_MIN_M = 1
            t_blk_cub = bench(lambda: ops.fp8_linear(x, w8, blk, 128))
            y_cub = ops.fp8_linear(x, w8, blk, 128)
            scaled_gemm.BLOCK_SCALED_MM_MIN_M = keep
            broken = dict(scaled_gemm._SCALED_MM_BROKEN)
            y_ref = ref.fp8_linear(x[:64].float(), w8, blk, 128) if M <= 4096 else None
            err = max(rel(y_tri[:64], y_ref), rel(y_cub[:64], y_ref))
            t_ch = bench(lambda: ops.fp8_linear(x, w8, ch, K))
            keep_i = scaled_gemm.INT8_GEMM
            scaled_gemm.INT8_GEMM = "triton"
            t_i8_tri = bench(lambda: ops.w8a8_linear(x, wi, wis))
            y_i8_tri = ops.w8a8_linear(x, wi, wis)
            scaled_gemm.INT8_GEMM = "int_mm"
            t_i8_mm = bench(lambda: ops.w8a8_linear(x, wi, wis))
            y_i8_mm = ops.w8a8_linear(x, wi, wis)
            scaled_gemm.INT8_GEMM = keep_i
            y_i8_ref = ref.w8a8_linear(x[:64], wi, wis)
            err8 = max(rel(y_i8_tri[:64], y_i8_ref), rel(y_i8_mm[:64], y_i8_ref))
            best = min(t_blk_tri, t_blk_cub, t_ch, t_i8_tri, t_i8_mm)
            print(f"{name:8s} {M:5d} {t_bf:8.1f} | {t_blk_tri:10.1f} {t_blk_cub:13.1f} {err:7.1e} | {t_ch:7.1f} | "
                  f"{t_i8_tri:9.1f} {t_i8_mm:11.1f} {err8:7.1e} | bf16 {tflops(M, N, K, t_bf):6.0f}  "
                  f"8-bit {tflops(M, N, K, best):6.0f}", flush=True)
            if broken:
                print(f"   torch._scaled_mm refused: {broken}")
                scaled_gemm._SCALED_MM_BROKEN.clear()
    print("\nactivation quantization (us): torch ops vs one launch; bit-equal: the launch's bytes vs the CPU reference")
    for T in (1, 256, 1024, 4096):
        for K in (4096, 14336):
            x = torch.randn(T, K, device=dev, dtype=torch.bfloat16)
            a = bench(lambda: quant_per_token_group_fp8(x, 128))
            b = bench(lambda: act_quant.quant_fp8_groups(x, 128, 4, True))
            c = bench(lambda: quant_per_token_int8(x))
            d = bench(lambda: act_quant.quant_int8_rows(x))
            # against the references on the CPU (the contract), first 64 rows
            xc = x[:64].cpu()
            same = torch.equal(act_quant.quant_fp8_groups(x[:64], 128)[0].cpu().view(torch.uint8),
                               quant_per_token_group_fp8(xc, 128)[0].contiguous().view(torch.uint8)) and \
                torch.equal(act_quant.quant_int8_rows(x[:64])[0].cpu(), quant_per_token_int8(xc)[0])
            print(f"  T={T:5d} K={K:5d}  fp8 groups {a:7.1f} -> {b:6.1f}   int8 rows {c:7.1f} -> {d:6.1f}   "
                  f"bit-equal {same}", flush=True)
    for name, (K, N) in (SHAPES if args.sweep else {}).items():
        wi = torch.randint(-127, 128, (N, K), dtype=torch.int8, device=dev)
        wis = torch.rand(N, device=dev) * 1e-3
        w8 = torch.randn(N, K, device=dev).clamp(-448, 448).to(torch.float8_e4m3fn)
        blk = (torch.rand(N, K // 128, device=dev) * 1e-3)    # rows differ: the Triton kernel
        for M in (1024, 4096):
            x = torch.randn(M, K, device=dev, dtype=torch.bfloat16)
            for what, fn in (("w8a8", lambda: ops.w8a8_linear(x, wi, wis)),
                             ("fp8blk", lambda: ops.fp8_linear(x, w8, blk, 128))):
                scaled_gemm.INT8_GEMM = "triton"
                res = []
                for cfg in CONFIGS:
                    scaled_gemm.CONFIG_OVERRIDE["config"] = cfg
                    try:
                        res.append((bench(fn), cfg))
                    except Exception as e:  # noqa: BLE001 - a config that does not compile is reported
                        print(f"  sweep {name} {cfg}: {type(e).__name__}: {str(e)[:100]}")
                scaled_gemm.CONFIG_OVERRIDE.clear()
                res.sort(key=lambda r: r[0])
                print(f"  sweep {what} {name} M={M} (BM,BN,BK,warps,stages): " +
                      ", ".join(f"{c}={t:.0f}us/{tflops(M, N, K, t):.0f}TF" for t, c in res[:4]), flush=True)


if __name__ == "__main__":
    main()
