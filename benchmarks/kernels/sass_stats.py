"""Static cost of a W4A16 GEMV variant on Hopper, without a GPU: compiles the kernel for sm_90
with Triton's NVIDIA backend (ptxas runs on the CPU), disassembles the cubin and prints
registers, spills, shared memory, the TTGIR layout conversions / shared-memory buffers, and
per loop of the SASS (a backward branch; the K loop is the largest) the instruction count by
opcode class and instructions per weight = loop body instructions x threads / weights per trip.

The launch is specialized as Triton's JIT would (an int argument equal to 1 becomes a constant,
a multiple of 16 is marked divisible by 16, pointers 16-byte aligned), from the shape the
launcher would use: the variant's own config function picks the tile, as on a 132-SM H200.

Usage: python benchmarks/kernels/sass_stats.py [--variant v2,v3a,...] [--shape gate_up] [--m 1]
          [--config BN,BK,WARPS,STAGES[,SPLITS]] [--dtype bf16|fp16] [--dump DIR]
"""
from __future__ import annotations

import argparse
import inspect
import os
import re
import subprocess
import sys
from collections import Counter

os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")

import torch  # noqa: E402
import triton  # noqa: E402
import triton.language as tl  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

SMS = 132
from halinfer.kernels.triton import w4a16, w4a16_v3, w4a16_v4  # noqa: E402

w4a16.sm_count = lambda device: SMS   # the launchers size their grids from an H200's SM count

SHAPES = {"qkv": (4096, 6144), "o": (4096, 4096), "gate_up": (4096, 28672), "down": (14336, 4096)}
SMS = 132
BIN = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")

# opcode classes reported (anything else under its own base name)
CLASSES = ["LDG", "LDGSTS", "LDGDEPBAR", "DEPBAR", "LDS", "LDSM", "STS", "LOP3", "SHF", "PRMT", "IMAD", "IADD3",
           "LEA", "MOV", "HMMA", "HGMMA", "WARPGROUP", "FFMA", "FMUL", "FADD", "HFMA2", "HADD2", "HMUL2", "I2F",
           "F2F", "F2FP", "BAR", "SHFL", "ISETP", "BRA"]


class _Dev:   # what the launchers read from a device
    type = "cuda"
    index = 0


def jit_signature(fn, args: dict, consts: dict):
    """ASTSource arguments as the JIT would specialize ``args`` (name -> torch dtype str for a
    pointer, or an int) and ``consts`` (constexpr name -> value)."""
    names = fn.arg_names
    sig, cexp, attrs = {}, {}, {}
    for i, n in enumerate(names):
        p = fn.params[i]
        if n in consts or (n not in args and p.default is not inspect.Parameter.empty):
            sig[n] = "constexpr"
            cexp[(i,)] = consts[n] if n in consts else p.default
            continue
        v = args[n]
        if isinstance(v, str):
            sig[n] = v
            attrs[(i,)] = [["tt.divisibility", 16]]
        elif v == 1:
            sig[n] = "constexpr"
            cexp[(i,)] = 1
        else:
            sig[n] = "i32"
            if v % 16 == 0:
                attrs[(i,)] = [["tt.divisibility", 16]]
    return sig, cexp, attrs


def compile_sm90(fn, args, consts, warps, stages, maxnreg=None, pdl=False):
    sig, cexp, attrs = jit_signature(fn, args, consts)
    src = ASTSource(fn, sig, constexprs=cexp, attrs=attrs)
    opts = dict(num_warps=warps, num_stages=stages)
    if pdl:
        opts["launch_pdl"] = True
    if maxnreg:
        opts["maxnreg"] = maxnreg
    return triton.compile(src, target=GPUTarget("cuda", 90, 32), options=opts)


def sass_of(cubin: bytes, tmp="/tmp/_sass_stats.cubin") -> list[tuple[int, str, str]]:
    """[(address, opcode with modifiers, operands)] of the cubin's one kernel."""
    with open(tmp, "wb") as f:
        f.write(cubin)
    text = subprocess.run([os.path.join(BIN, "cuobjdump"), "-sass", tmp], capture_output=True, text=True,
                          check=True).stdout
    out = []
    for line in text.splitlines():
        m = re.match(r"\s*/\*([0-9a-f]{4,})\*/\s+(@!?U?P\w+\s+)?([A-Z][\w.]*)\s*(.*?);", line)
        if m:
            out.append((int(m.group(1), 16), m.group(3), m.group(4)))
    return out


def res_usage(cubin: bytes, tmp="/tmp/_sass_stats.cubin") -> dict:
    with open(tmp, "wb") as f:
        f.write(cubin)
    text = subprocess.run([os.path.join(BIN, "cuobjdump"), "-res-usage", tmp], capture_output=True, text=True,
                          check=True).stdout
    return {k: int(v) for k, v in re.findall(r"(REG|STACK|SHARED|LOCAL):(\d+)", text)}


def loops(sass):
    """(start, end) index ranges of backward branches' bodies, largest first."""
    idx = {a: i for i, (a, _, _) in enumerate(sass)}
    found = []
    for i, (a, op, ops) in enumerate(sass):
        if op.startswith("BRA"):
            m = re.search(r"0x([0-9a-f]+)", ops)
            if m and int(m.group(1), 16) < a and int(m.group(1), 16) in idx:
                found.append((idx[int(m.group(1), 16)], i + 1))
    return sorted(found, key=lambda r: r[0] - r[1])


def classify(op: str) -> str:
    base = op.split(".")[0]
    if base == "LDG" and ".E.128" in op:
        return "LDG.128"
    if base in ("LDGSTS",):
        return "LDGSTS.128" if ".128" in op else "LDGSTS.32/64"
    return base


def load_cover(sass, s, e):
    """Synchronous global loads (LDG) of the loop body: for each, how many instructions of the
    trip run before its register is first read (wrapping into the next trip, marked +).
    A read inside the same trip a few dozen instructions on waits out most of a global
    memory latency; one in the next trip has the whole trip to cover it."""
    body = sass[s:e]
    out = []
    for i, (_, op, ops) in enumerate(body):
        if op.startswith("LDG") and not op.startswith(("LDGSTS", "LDGDEPBAR")):
            reg = ops.split(",")[0].strip()
            pat = re.compile(r"\b%s\b" % re.escape(reg))
            order = list(range(i + 1, len(body))) + list(range(0, i + 1))
            j = next((j for j in order if pat.search(body[j][2])), None)
            if j is None:
                out.append("?")
            else:
                out.append(f"{j - i}" if j > i else f"+{len(body) - i + j}")
    return out


def ttgir_stats(ttgir: str) -> dict:
    body = ttgir.split("scf.for", 1)[1] if "scf.for" in ttgir else ""
    return {"convert_layout(all)": ttgir.count("ttg.convert_layout"),
            "convert_layout(first loop)": body.split("scf.yield", 1)[0].count("ttg.convert_layout"),
            "local_alloc(first loop)": body.split("scf.yield", 1)[0].count("ttg.local_alloc"),
            "local_load(first loop)": body.split("scf.yield", 1)[0].count("ttg.local_load"),
            "local_alloc(all)": ttgir.count("ttg.local_alloc")}


def report(name, kern, warps, weights_per_trip, verbose=True):
    cub = kern.asm["cubin"]
    ru = res_usage(cub)
    sass = sass_of(cub)
    lp = loops(sass)
    print(f"== {name}: regs {ru.get('REG')} spill(local) {ru.get('LOCAL', 0)} stack {ru.get('STACK', 0)} "
          f"smem(dynamic, metadata) {kern.metadata.shared} B  warps {warps}  SASS {len(sass)} instrs")
    print("   ttgir:", ttgir_stats(kern.asm["ttgir"]))
    if not lp:
        print("   no loop found")
        return None
    s, e = lp[0]
    body = Counter(classify(op) for _, op, _ in sass[s:e])
    n = e - s
    ipw = n * warps * 32 / weights_per_trip
    print(f"   K loop: {n} instrs/thread/trip, {weights_per_trip} weights/trip -> {ipw:.2f} instrs per weight "
          f"({n * warps / weights_per_trip * 1000:.1f} warp-instrs per 1000 weights)")
    if verbose:
        items = sorted(body.items(), key=lambda kv: -kv[1])
        print("   " + "  ".join(f"{k} {v}" for k, v in items))
    print("   LDG -> first read (instructions; + = next trip):", " ".join(load_cover(sass, s, e)))
    for s2, e2 in lp[1:4]:
        print(f"   other loop: {e2 - s2} instrs")
    return ipw


# ---- the variants: (kernel, config function) -----------------------------------------------

def v2_launch(M, K, N, group, dt, cfg=None):
    if cfg:
        w4a16.GEMV_V2_CONFIG_OVERRIDE["config"] = cfg
    try:
        bn, bk, splits, warps, stages = w4a16._gemv_v2_config(0, M, N, K, group, False, _Dev())
    finally:
        w4a16.GEMV_V2_CONFIG_OVERRIDE.clear()
    kps = triton.cdiv(triton.cdiv(K, splits), bk) * bk
    splits = triton.cdiv(K, kps)
    tdt = "bf16" if dt == "bf16" else "fp16"
    args = dict(x_ptr="*" + tdt, qw_ptr="*i32", qz_ptr="*i32", s_ptr="*" + tdt, b_ptr="*" + tdt, y_ptr="*" + tdt,
                part_ptr="*fp32", cnt_ptr="*i32", M=M, N=N, K=K, k_per_split=kps, stride_xm=K, stride_qwr=N // 8,
                stride_qzr=N // 8, stride_sr=N, stride_ym=N)
    consts = dict(DT=tl.bfloat16 if dt == "bf16" else tl.float16, GROUP=group, HAS_BIAS=False, SPLIT=splits > 1,
                  EVEN_K=K % bk == 0, EVEN_N=N % bn == 0, ASM=True, BLOCK_M=16, BLOCK_N=bn, BLOCK_K=bk)
    info = f"BLOCK_N {bn} BLOCK_K {bk} splits {splits} grid {triton.cdiv(N, bn) * splits} stages {stages}"
    return w4a16._w4a16_gemv_v2_awq_kernel, args, consts, warps, stages, None, bn * bk, info


def v3_launch(variant):
    def launch(M, K, N, group, dt, cfg=None):
        return w4a16_v3.static_launch(variant, M, K, N, group, dt, SMS, cfg)
    return launch


def v4_launch(M, K, N, group, dt, cfg=None):
    return w4a16_v4.static_launch(M, K, N, group, dt, SMS, cfg)


VARIANTS = {"v2": v2_launch, **{v: v3_launch(v) for v in w4a16_v3.VARIANTS}, "v4": v4_launch}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--variant", default="v2," + ",".join(w4a16_v3.VARIANTS))
    ap.add_argument("--shape", default="gate_up")
    ap.add_argument("--m", type=int, default=1)
    ap.add_argument("--group", type=int, default=128)
    ap.add_argument("--dtype", default="bf16")
    ap.add_argument("--config", default=None, help="BN,BK,WARPS,STAGES[,SPLITS[,MAXNREG]] (the variant's override)")
    ap.add_argument("--maxnreg", type=int, default=None, help="override the variant's register cap (0: none)")
    ap.add_argument("--dump", default=None, help="write ttgir / ptx / sass here")
    ap.add_argument("--pdl", action="store_true", help="v3a / v3c as launched with HALINFER_PDL=1 (prefetch + wait)")
    ap.add_argument("--norm", action="store_true", help="v3a / v3c with the deferred RMSNorm (w4a16_linear_normed)")
    ap.add_argument("--act", action="store_true", help="v3a / v3c with the deferred SiLU-and-mul (w4a16_linear_gated)")
    args = ap.parse_args()
    K, N = SHAPES[args.shape]
    cfg = tuple(int(v) for v in args.config.split(",")) if args.config else None
    print(f"shape {args.shape} K {K} N {N} M {args.m} group {args.group} {args.dtype}, sm_90, {SMS} SMs")
    for v in args.variant.split(","):
        kern_fn, a, c, warps, stages, nreg, wpt, info = VARIANTS[v](args.m, K, N, args.group, args.dtype, cfg)
        if args.maxnreg is not None:
            nreg = args.maxnreg or None
        pdl = args.pdl and v in ("v3a", "v3c")
        if pdl:
            c.update(USE_PDL=True, **w4a16_v3.pdl_consts(c["BLOCK_N"], c["BLOCK_K"], a["k_per_split"]))
        if args.norm and v in ("v3a", "v3c"):
            a.update(r_ptr=a["x_ptr"], nw_ptr=a["x_ptr"], so_ptr=a["x_ptr"], eps=1e-5)
            c.update(NORM=True, KROW=1 << (K - 1).bit_length())
        if args.act and v in ("v3a", "v3c"):
            c.update(ACT=0)
        kern = compile_sm90(kern_fn, a, c, warps, stages, nreg, pdl)
        info += f" maxnreg {nreg}"
        print(f"   [{info}]")
        report(v, kern, warps, wpt)
        if args.dump:
            os.makedirs(args.dump, exist_ok=True)
            for key in ("ttgir", "ptx"):
                with open(os.path.join(args.dump, f"{v}.{key}"), "w") as f:
                    f.write(kern.asm[key])
            with open(os.path.join(args.dump, f"{v}.sass"), "w") as f:
                f.write("\n".join(f"{a:6x} {op} {o}" for a, op, o in sass_of(kern.asm["cubin"])))


if __name__ == "__main__":
    sys.exit(main())
