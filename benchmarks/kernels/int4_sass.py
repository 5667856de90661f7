"""SASS instruction counts of the paged-attention key loop per int4 tile, compiled for sm_90
without a GPU (Triton's bundled ptxas / nvdisasm): what tl_math.INT4_SPLIT's auto choice rests on
until bench_decode.py times the tiles on a card.  Counts are per warp per key tile (BLOCK_N keys),
for the largest loop holding the dots (prefill: its masked or unmasked loop, whichever is longer).

Usage: python benchmarks/kernels/int4_sass.py [--kernel decode|prefill] [--dtype fp16|bf16] [--d 128]
(run without TRITON_INTERPRET; it compiles only, nothing is launched).
"""
from __future__ import annotations

import argparse
import collections
import os
import re
import subprocess
import tempfile

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from halinfer.kernels.triton import attention_decode as ad
from halinfer.kernels.triton import attention_prefill as ap
from halinfer.kernels.triton import tl_math

TILES = {"words": tl_math.KV_INT4_WORDS, "bytes": tl_math.KV_INT4, "split2": tl_math.KV_INT4_SPLIT2,
         "split4": tl_math.KV_INT4_SPLIT4, "split8": tl_math.KV_INT4_SPLIT8}
SHOW = ("HMMA", "HGMMA", "LDGSTS", "LDG", "LDS", "LDSM", "STS", "PRMT", "LOP3", "SHF", "IMAD", "IADD3",
        "FFMA", "FMUL", "FADD", "MUFU", "SHFL", "BAR", "LDL", "STL")


def compile_kernel(kernel, kv, dt, D):
    fn = ad._decode_kernel if kernel == "decode" else ap._prefill_kernel
    consts = dict(D=D, DV=D, BS=16, BLOCK_D=D, BLOCK_DV=D, SOFTCAP=False, ALIBI=False, SINKS=False, WINDOW=False,
                  CHUNK=False, KV=kv, PREC="tf32")
    if kernel == "decode":
        block_n, block_h, warps = ad.decode_config(D, 4, False, 0, kv)
        consts.update(BLOCK_H=block_h, BLOCK_N=block_n, SPLIT=False)
        stages = 2
    else:
        block_m, block_n, warps, stages = ap.prefill_config(D, False, 1024, 4096, 2)
        consts.update(CAUSAL=True, BLOCK_M=block_m, BLOCK_N=block_n, BIDIR=False)
    ptrs = {"q_ptr": f"*{dt}", "o_ptr": f"*{dt}", "k_ptr": "*u8", "v_ptr": "*u8"}
    sig = {}
    for a in fn.arg_names:
        if a in consts:
            sig[a] = "constexpr"
        elif a.endswith("_ptr"):
            sig[a] = ptrs.get(a, "*i32" if a in ("q_start_ptr", "seq_lens_ptr", "bt_ptr", "spans_ptr") else "*fp32")
        else:
            sig[a] = "fp32" if a in ("scale", "soft_cap") else "i32"
    return triton.compile(ASTSource(fn, sig, consts), target=GPUTarget("cuda", 90, 32),
                          options=dict(num_warps=warps, num_stages=stages))


def loop_counts(cubin: bytes) -> collections.Counter:
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        nvdisasm = os.path.join(os.path.dirname(triton.__file__), "backends/nvidia/bin/nvdisasm")
        lines = subprocess.run([nvdisasm, "-c", f.name], capture_output=True, text=True, check=True).stdout.splitlines()
    labels = {m.group(1): i for i, s in enumerate(lines) if (m := re.match(r"(\.L_x_\d+):", s))}
    best = []
    for i, s in enumerate(lines):   # a branch back to an earlier label closes a loop
        m = re.search(r"BRA\s+`\((\.L_x_\d+)\)", s)
        if m and labels.get(m.group(1), i) < i:
            body = [x for x in lines[labels[m.group(1)]:i + 1] if re.match(r"\s*/\*[0-9a-f]+\*/", x)]
            if any("MMA" in x for x in body) and len(body) > len(best):
                best = body
    ops = collections.Counter()
    for s in best:
        m = re.match(r"\s*/\*[0-9a-f]+\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_]*)", s)
        if m:
            ops[m.group(1)] += 1
    return ops


def main():
    ap_ = argparse.ArgumentParser()
    ap_.add_argument("--kernel", default="decode", choices=("decode", "prefill"))
    ap_.add_argument("--dtype", default="fp16", choices=("fp16", "bf16"))
    ap_.add_argument("--d", type=int, default=128, help="head dim, a power of two")
    ap_.add_argument("--tiles", default=",".join(TILES))
    args = ap_.parse_args()
    for name in args.tiles.split(","):
        if name == "split8" and args.d < 128 or name in ("split4",) and args.d < 64:
            continue   # planes under 16 channels: not a tile attention_args would pick
        ops = loop_counts(compile_kernel(args.kernel, TILES[name], args.dtype, args.d).asm["cubin"])
        print(f"{name:>7} {args.kernel} {args.dtype} D={args.d}: {sum(ops.values()):5d} instructions  "
              + " ".join(f"{k}={ops[k]}" for k in SHOW if ops[k]))


if __name__ == "__main__":
    main()
