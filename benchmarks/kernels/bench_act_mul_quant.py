"""The gated activation fused with down_proj's activation quantization
(kernels/triton/act_mul_quant.py, TritonOps.act_and_mul_quant) against the two launches it
replaces (act_and_mul, then act_quant.py's quantizer), at Llama-3-8B's intermediate size, on a
CUDA GPU.  Device time per call, replayed from a CUDA graph (timing.py), and whether the fused
bytes and scales equal the unfused ones.

  int8       W8A8: per-token scales (the row kernel: two passes over the row)
  fp8-g128   block FP8: groups of 128 (the group kernel), rows padded and scales
             column-major where TritonOps asks for cuBLASLt's layout (bf16, SM90)
  fp8-row    per-channel FP8: one group per row (the row kernel)

Usage: python benchmarks/kernels/bench_act_mul_quant.py [--t 1,256,1024] [--i 14336] [--kind silu]
       [--dtype bfloat16]
"""
from __future__ import annotations

import argparse
import os
import sys

import torch
import triton

from halinfer.core.ops import ActQuant
from halinfer.kernels.triton import act_quant, scaled_gemm
from halinfer.kernels.triton.ops import TritonOps

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from timing import device_us  # noqa: E402


def _bytes(q):
    return q if q.dtype == torch.int8 else q.view(torch.uint8)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--t", default="1,256,1024")
    ap.add_argument("--i", type=int, default=14336)
    ap.add_argument("--kind", default="silu", choices=("silu", "gelu", "gelu_tanh"))
    ap.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float16"))
    args = ap.parse_args()
    dev, dtype, I = "cuda", getattr(torch, args.dtype), args.i
    ops = TritonOps()
    print(f"{torch.cuda.get_device_name()}  torch {torch.__version__}  triton {triton.__version__}  "
          f"{args.kind}, I={I}, {args.dtype}")
    print(f"{'spec':9s} {'T':>5s} {'unfused us':>10s} {'(act':>7s} {'+ quant)':>8s} {'fused us':>9s} "
          f"{'speed-up':>8s}  layout        bit-equal")
    for name, spec in (("int8", ActQuant("int8")), ("fp8-g128", ActQuant("fp8", 128)),
                       ("fp8-row", ActQuant("fp8", I))):
        for T in (int(t) for t in args.t.split(",")):
            x = torch.randn(T, 2 * I, device=dev, dtype=dtype) * 3
            col = spec.kind == "fp8" and scaled_gemm.block_layout_wanted(x[:, :I], spec.group)
            pad = 4 if col else 1

            def quant(y):
                if spec.kind == "int8":
                    return act_quant.quant_int8_rows(y)
                return act_quant.quant_fp8_groups(y, min(spec.group, I), pad, col)

            def unfused():
                return quant(ops.act_and_mul(x, args.kind))

            def fused():
                return ops.act_and_mul_quant(x, args.kind, spec)

            y = ops.act_and_mul(x, args.kind)
            t_act = device_us(lambda: ops.act_and_mul(x, args.kind))
            t_quant = device_us(lambda: quant(y))
            t_un, t_fu = device_us(unfused), device_us(fused)
            uq, us = unfused()
            qa = fused()
            same = torch.equal(_bytes(qa.q[:T]), _bytes(uq[:T])) and torch.equal(qa.scale[:T], us[:T])
            layout = f"pad{pad}{' colmajor' if qa.scales_col_major else ''}"
            print(f"{name:9s} {T:5d} {t_un:10.1f} {t_act:7.1f} {t_quant:8.1f} {t_fu:9.1f} {t_un / t_fu:7.2f}x  "
                  f"{layout:13s} {same}", flush=True)


if __name__ == "__main__":
    main()
