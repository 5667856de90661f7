"""Compile the activation-quantization kernels for sm_90 without a GPU (Triton's bundled ptxas)
and count local-memory instructions (LDL / STL: register spills) in their SASS: the fused
activation + quant kernels (act_mul_quant.py), the act_and_mul kernel whose helper they share,
act_quant.py's quantizers and the fused norm + quant kernel, which share the rounding helpers.

Usage: python benchmarks/kernels/act_quant_sass.py   (without TRITON_INTERPRET; nothing is launched)
Exits non-zero when a configuration fails to compile.
"""
from __future__ import annotations

import itertools
import os
import re
import subprocess
import sys
import tempfile

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from halinfer.kernels.triton import act_mul_quant as amq
from halinfer.kernels.triton import act_quant as aq
from halinfer.kernels.triton import activation as act
from halinfer.kernels.triton import norm_quant as nq

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


def spills(fn, ptrs: dict, consts: dict, warps: int, floats=("eps",)) -> int:
    """LDL / STL instructions in fn's sm_90 SASS (compiles; raises when it does not)."""
    sig = {a: "constexpr" if a in consts else ptrs[a] if a.endswith("_ptr") else "fp32" if a in floats else "i32"
           for a in fn.arg_names}
    k = triton.compile(ASTSource(fn, sig, consts), target=GPUTarget("cuda", 90, 32), options=dict(num_warps=warps))
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(k.asm["cubin"])
        f.flush()
        nvdisasm = os.path.join(os.path.dirname(triton.__file__), "backends/nvidia/bin/nvdisasm")
        sass = subprocess.run([nvdisasm, "-c", f.name], capture_output=True, text=True, check=True).stdout
    return len(re.findall(r"\b(?:LDL|STL)\b", sass))


def configs():
    for dt, kind in itertools.product(DTYPES, (0, 1, 2)):
        for bc, bg in ((128, 8), (64, 16), (128, 1), (1024, 1)):
            yield (f"act_mul_quant groups {dt} KIND={kind} BLOCK_C={bc} BLOCK_G={bg}", amq._act_mul_quant_groups_kernel,
                   {"x_ptr": f"*{dt}", "q_ptr": "*u8", "s_ptr": "*fp32"}, dict(KIND=kind, BLOCK_C=bc, BLOCK_G=bg), 4)
        for fp8, block in itertools.product((False, True), (2048, 128)):
            yield (f"act_mul_quant rows {dt} KIND={kind} FP8={fp8} BLOCK={block}", amq._act_mul_quant_rows_kernel,
                   {"x_ptr": f"*{dt}", "q_ptr": "*u8" if fp8 else "*i8", "s_ptr": "*fp32"},
                   dict(KIND=kind, FP8=fp8, BLOCK=block), 4)
        yield (f"act_and_mul {dt} KIND={kind}", act._act_and_mul_kernel, {"x_ptr": f"*{dt}", "o_ptr": f"*{dt}"},
               dict(KIND=kind, ROWS=1, BLOCK=1024), 4)
    for dt in DTYPES:
        yield (f"quant_fp8_groups {dt}", aq._fp8_group_quant_kernel,
               {"x_ptr": f"*{dt}", "q_ptr": "*u8", "s_ptr": "*fp32"}, dict(BLOCK_C=128, BLOCK_G=8), 4)
        yield (f"quant_int8_rows {dt}", aq._int8_row_quant_kernel,
               {"x_ptr": f"*{dt}", "q_ptr": "*i8", "s_ptr": "*fp32"}, dict(BLOCK=2048), 4)
        for fp8, group, block, res in ((False, 4096, 4096, True), (True, 128, 4096, True), (True, 4096, 4096, False),
                                       (True, 128, 8192, False)):
            ptrs = {"x_ptr": f"*{dt}", "r_ptr": f"*{dt}", "w_ptr": f"*{dt}", "s_ptr": f"*{dt}",
                    "q_ptr": "*u8" if fp8 else "*i8", "qs_ptr": "*fp32"}
            yield (f"rms_norm_quant {dt} FP8={fp8} GROUP={group} BLOCK={block} res={res}", nq._rms_norm_quant_kernel,
                   ptrs, dict(HAS_RES=res, OUT_DTYPE=nq._TL_DTYPE[DTYPES[dt]], FP8=fp8, GROUP=group, ROWS=1,
                              BLOCK=block), 8 if block > 2048 else 4)


def main() -> int:
    print(f"triton {triton.__version__}, sm_90")
    bad = 0
    for label, fn, ptrs, consts, warps in configs():
        try:
            print(f"ok    {label}: {spills(fn, ptrs, consts, warps)} LDL/STL")
        except Exception as e:  # noqa: BLE001 - every failing configuration is reported
            bad += 1
            print(f"FAIL  {label}: {type(e).__name__}: {(str(e).splitlines() or [''])[-1][:300]}")
    print("failed:", bad)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
