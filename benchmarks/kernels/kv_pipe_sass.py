"""Are the paged-attention K/V loads prefetched?  Compiles the decode (or prefill) kernel for sm_90
without a GPU (as int4_sass.py does) per cache mode and reports, for the main key loop: SASS
LDGSTS (cp.async) vs LDG counts, TTGIR async_copy_global_to_local / async_wait ops, registers
and spills.  HALINFER_KV_PREFETCH (tl_math.KV_PREFETCH) picks the variant, or --prefetch 0,1.

Usage: python benchmarks/kernels/kv_pipe_sass.py [--kernel decode|prefill] [--dtype bf16] [--d 128]
       [--modes 0,1,2,5,8] [--prefetch 0,1] [--split] [--sinks] [--window]
"""
from __future__ import annotations

import argparse
import collections
import os
import re
import subprocess
import sys
import tempfile

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from halinfer.kernels.triton import attention_decode as ad  # noqa: E402
from halinfer.kernels.triton import attention_prefill as ap  # noqa: E402
from halinfer.kernels.triton import tl_math  # noqa: E402

CACHE_TY = {0: None, 1: "*i8", 2: "*fp8e4nv"}   # int4 modes: *u8; 0: the query dtype


def launch_values(kernel, kv, D, split):
    """The runtime integer arguments bench_decode.py's shapes pass (32 q / 8 kv heads, block 16,
    1,024 tokens, NHD cache), so the compile sees the launch's specialization: Triton marks ints
    that are multiples of 16 (and 16-byte aligned pointers) divisible by 16 and makes ints equal
    to 1 constants; without that the K/V loads are neither vectorized nor copied asynchronously."""
    HQ, HK, BS = 32, 8, 16
    row = D // 2 if kv >= 3 else D                     # stored channels per (token, head)
    quant = kv != 0
    v = dict(stride_qt=HQ * D, stride_qh=D, stride_ot=HQ * D, stride_oh=D, stride_bt=1024 // BS,
             stride_kb=BS * HK * row, stride_kt=HK * row, stride_kh=row,
             stride_vb=BS * HK * row, stride_vt=HK * row, stride_vh=row,
             stride_ksb=BS * HK if quant else 0, stride_kst=HK if quant else 0, stride_ksh=1 if quant else 0,
             stride_vsb=BS * HK if quant else 0, stride_vst=HK if quant else 0, stride_vsh=1 if quant else 0,
             window=0, chunk=0, GROUP=HQ // HK)
    if kernel == "decode":
        ns = 4 if split else 1
        v.update(H_CHUNKS=1, num_splits=ns,
                 stride_pt=HQ * ns * D if split else 0, stride_ph=ns * D if split else 0,
                 stride_ps=D if split else 0, stride_lt=HQ * ns if split else 0, stride_lh=ns if split else 0)
    return v


def stages_default(kernel, kv, stages, prefetch):
    if kernel == "decode":
        return ad.decode_stages(kv, prefetch) if hasattr(ad, "decode_stages") else 2
    return stages


def compile_kernel(kernel, kv, dt, D, split=False, sinks=False, window=False, prefetch=None, num_stages=None,
                   pdl=False):
    fn = ad._decode_kernel if kernel == "decode" else ap._prefill_kernel
    consts = dict(D=D, DV=D, BS=16, BLOCK_D=D, BLOCK_DV=D, SOFTCAP=False, ALIBI=False, SINKS=sinks,
                  WINDOW=window, CHUNK=False, KV=kv, PREC="tf32" if dt == "fp32" else "ieee")
    if kernel == "decode":
        block_n, block_h, warps = ad.decode_config(D, 4, False, 0, kv)
        consts.update(BLOCK_H=block_h, BLOCK_N=block_n, SPLIT=split)
        stages = 2
    else:
        block_m, block_n, warps, stages = ap.prefill_config(D, False, 1024, 4096, 4 if dt == "fp32" else 2)
        consts.update(CAUSAL=True, BLOCK_M=block_m, BLOCK_N=block_n, BIDIR=False)
    if prefetch is None and kernel == "decode" and hasattr(ad, "decode_prefetch"):
        prefetch = ad.decode_prefetch(kv)
    if prefetch is not None and "PREFETCH" in fn.arg_names:
        consts["PREFETCH"] = prefetch
    if "USE_PDL" in fn.arg_names:
        consts["USE_PDL"] = pdl
    if "ASM" in fn.arg_names:   # as the CUDA launchers pass it (tl_math.INT4_ASM)
        consts["ASM"] = tl_math.INT4_ASM
    cache = CACHE_TY.get(kv, "*u8") or f"*{dt}"
    ptrs = {"q_ptr": f"*{dt}", "o_ptr": f"*{dt}", "k_ptr": cache, "v_ptr": cache}
    vals = launch_values(kernel, kv, D, split)
    if window:
        vals["window"] = 100
    sig, attrs = {}, {}
    for i, a in enumerate(fn.arg_names):
        if a in consts:
            sig[a] = "constexpr"
        elif a.endswith("_ptr"):
            sig[a] = ptrs.get(a, "*i32" if a in ("q_start_ptr", "seq_lens_ptr", "bt_ptr", "spans_ptr") else "*fp32")
            attrs[(i,)] = [["tt.divisibility", 16]]
        elif a in ("scale", "soft_cap"):
            sig[a] = "fp32"
        elif vals.get(a) == 1:
            sig[a] = "constexpr"
            consts[a] = 1
        else:
            sig[a] = "i32"
            if vals.get(a, 1) % 16 == 0:
                attrs[(i,)] = [["tt.divisibility", 16]]
    if num_stages is not None:
        stages_ = num_stages
    else:
        stages_ = stages_default(kernel, kv, stages, prefetch)
    return triton.compile(ASTSource(fn, sig, consts, attrs), target=GPUTarget("cuda", 90, 32),
                          options=dict(num_warps=warps, num_stages=stages_, **({"launch_pdl": True} if pdl else {})))


def sass_lines(cubin: bytes):
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        nvdisasm = os.path.join(os.path.dirname(triton.__file__), "backends/nvidia/bin/nvdisasm")
        return subprocess.run([nvdisasm, "-c", f.name], capture_output=True, text=True, check=True).stdout.splitlines()


def resources(cubin: bytes):
    """(registers, spill bytes stored) from cuobjdump's resource usage."""
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        tool = os.path.join(os.path.dirname(triton.__file__), "backends/nvidia/bin/cuobjdump")
        out = subprocess.run([tool, "--dump-resource-usage", f.name], capture_output=True, text=True, check=True).stdout
    regs = re.search(r"REG:(\d+)", out)
    stack = re.search(r"STACK:(\d+)", out)
    return int(regs.group(1)) if regs else -1, int(stack.group(1)) if stack else -1


def loop_body(lines):
    """The longest loop (a branch back to an earlier label) holding a tensor-core op."""
    labels = {m.group(1): i for i, s in enumerate(lines) if (m := re.match(r"(\.L_x_\d+):", s))}
    best = []
    for i, s in enumerate(lines):
        m = re.search(r"BRA\s+`\((\.L_x_\d+)\)", s)
        if m and labels.get(m.group(1), i) < i:
            body = [x for x in lines[labels[m.group(1)]:i + 1] if re.match(r"\s*/\*[0-9a-f]+\*/", x)]
            if any("MMA" in x for x in body) and len(body) > len(best):
                best = body
    return best


def op_counts(body):
    ops = collections.Counter()
    for s in body:
        m = re.match(r"\s*/\*[0-9a-f]+\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_]*)(\.[A-Z0-9_.]+)?", s)
        if m:
            ops[m.group(1)] += 1
            if m.group(1) == "LDG":
                ops["LDG" + (m.group(2) or "")] += 0   # keep the base name's count only
    return ops


def ttgir_summary(ttgir: str):
    c = collections.Counter()
    for key in ("ttg.async_copy_global_to_local", "ttg.async_wait", "ttg.async_commit_group", "ttg.local_alloc",
                "ttg.local_load", "ttg.convert_layout", "tt.load"):
        c[key.split(".")[-1]] = ttgir.count(key + " ")
    return c


def report(kernel, kv, dt, D, **kw):
    k = compile_kernel(kernel, kv, dt, D, **kw)
    body = loop_body(sass_lines(k.asm["cubin"]))
    ops = op_counts(body)
    tg = ttgir_summary(k.asm["ttgir"])
    n_regs, n_spills = resources(k.asm["cubin"])
    return dict(instr=sum(v for o, v in ops.items() if "." not in o), LDGSTS=ops["LDGSTS"], LDG=ops["LDG"],
                LDS=ops["LDS"] + ops["LDSM"], HMMA=ops["HMMA"] + ops["HGMMA"], BAR=ops["BAR"], DEPBAR=ops["DEPBAR"],
                regs=n_regs, stack=n_spills, **{f"ir_{a}": b for a, b in tg.items()})


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--kernel", default="decode", choices=("decode", "prefill"))
    p.add_argument("--dtype", default="bf16", choices=("fp16", "bf16", "fp32"))
    p.add_argument("--d", type=int, default=128)
    p.add_argument("--modes", default="0,1,2,5,8")
    p.add_argument("--prefetch", default=None, help="comma list of 0/1/2 (decode PREFETCH; default the launcher's)")
    p.add_argument("--split", action="store_true")
    p.add_argument("--stages", type=int, default=None, help="num_stages (default: the launcher's)")
    p.add_argument("--sinks", action="store_true")
    p.add_argument("--window", action="store_true")
    p.add_argument("--pdl", action="store_true", help="as launched with HALINFER_PDL=1 (decode)")
    a = p.parse_args()
    pfs = [None] if a.prefetch is None else [int(x) for x in a.prefetch.split(",")]
    for kv in [int(m) for m in a.modes.split(",")]:
        for pf in pfs:
            r = report(a.kernel, kv, a.dtype, a.d, split=a.split, sinks=a.sinks, window=a.window, prefetch=pf, num_stages=a.stages,
                       pdl=a.pdl)
            print(f"{a.kernel} {a.dtype} D={a.d} KV={kv} pf={pf}: " + " ".join(f"{k}={v}" for k, v in r.items()),
                  flush=True)


if __name__ == "__main__":
    main()
