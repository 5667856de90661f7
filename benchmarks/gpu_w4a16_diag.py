"""Pinpoints the W4A16 (AWQ / GPTQ) model-level mismatch on a CUDA GPU.

On an H200 (2026-12-01) the W4A16 GEMM kernel test passed but the declared-support cells
for AWQ / GPTQ failed on cuda, while the same checkpoints pass on the CPU reference.  This
runs one such cell (tests/models/test_declared_support.py's _check_quantized) in several
variants and prints one line each, PASS or FAIL with the reason:

  triton-eager    the Triton W4A16 kernels, no CUDA graphs
  triton-graph    the same with CUDA graphs (the first mode the declared test runs on cuda)
  torchref-graph  W4A16 routed to the core torch reference (on the GPU), graphs on: if this
                  fails too, the W4A16 kernels are not the culprit (look at graphs / attention)
  torchref-eager

and, in a spy run (eager), every W4A16 call's inputs are re-run through the torch reference
on the same device: the worst relative error per (op, M, K, N, strides, dtypes) is printed,
so a kernel mismatch names the shape that triggers it.

  python benchmarks/gpu_w4a16_diag.py [--cases llama,qwen2-tied] [--methods awq,gptq]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import traceback

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", default="llama,qwen2-tied")
    ap.add_argument("--methods", default="awq,gptq")
    ap.add_argument("--variants", default="spy,triton-eager,triton-graph,torchref-graph,torchref-eager")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--backend", default="cuda", help="another backend only to try this script out")
    args = ap.parse_args()

    from halinfer.core.ops import Ops
    from halinfer.core.plugin import load_plugins
    from halinfer.kernels.triton.ops import TritonOps
    from halinfer.testing.cases import build_case
    from tests.models import test_declared_support as tds

    backend = load_plugins().backends[args.backend]
    ok, why = backend.available()
    if not ok:
        print(f"{args.backend} not available: {why}")
        return 1
    # the engine refuses formats cuda does not declare: accept them for this run
    backend.weight_quant = tuple(dict.fromkeys((*backend.weight_quant, "awq", "gptq")))
    dtype = getattr(torch, args.dtype)
    methods = {"awq": ("awq", dict(group=32)), "gptq": ("gptq", dict(group=32, desc_act=True))}
    real = {n: getattr(TritonOps, n) for n in ("w4a16_linear", "gptq_linear")}
    worst: dict = {}

    def spy(name):
        fn, ref = real[name], getattr(Ops, name)

        def run(self, x, *a, **k):
            y = fn(self, x, *a, **k)
            if not torch.cuda.is_current_stream_capturing():
                want = ref(Ops(), x, *a, **k).float()
                err = float((y.float() - want).abs().max() / want.abs().max().clamp(min=1e-6))
                w = a[0]
                nb = 4 if name == "w4a16_linear" else 5          # where bias sits among the positionals
                bias = k.get("bias", a[nb] if len(a) > nb else None)
                key = (name, tuple(x.shape), x.stride(), x.storage_offset(), str(x.dtype), tuple(w.shape),
                       w.stride(), "bias" if bias is not None else "nobias")
                worst[key] = max(worst.get(key, 0.0), err)
            return y
        return run

    def route(variant):
        for n in real:
            if variant == "spy":
                setattr(TritonOps, n, spy(n))
            elif variant.startswith("torchref"):
                setattr(TritonOps, n, getattr(Ops, n))
            else:
                setattr(TritonOps, n, real[n])

    root = tempfile.mkdtemp(prefix="w4diag-")
    cache: dict = {}
    failures = 0
    for case in args.cases.split(","):
        model_dir, _ = build_case(case, root, cache)
        for m in args.methods.split(","):
            method, opts = methods[m]
            for variant in args.variants.split(","):
                route(variant)
                graphs = variant.endswith("graph")
                t0 = time.time()
                tmp = tempfile.mkdtemp(dir=root)
                try:
                    tds._check_quantized(backend, model_dir, case, dtype, graphs, method, opts,
                                         __import__("pathlib").Path(tmp))
                    res = "PASS"
                except Exception as e:  # noqa: BLE001 - every failure is reported, the run goes on
                    failures += 1
                    msg = str(e).strip().splitlines()
                    res = f"FAIL {type(e).__name__}: {' | '.join(msg[:3])[:400]}"
                    if not isinstance(e, AssertionError):
                        traceback.print_exc(limit=4)
                print(f"[{case} {m} {variant}] {res} ({time.time() - t0:.1f}s)", flush=True)
    route("triton-eager")
    if worst:
        print("\nspy: worst relative error of the Triton W4A16 op against the torch reference, per call shape")
        for key, err in sorted(worst.items(), key=lambda kv: -kv[1]):
            flag = "  <-- MISMATCH" if err > 2e-2 else ""
            print(f"  {err:.2e}  {key}{flag}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
