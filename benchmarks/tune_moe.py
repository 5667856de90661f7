"""Measure the fused-MoE tile configurations for one expert shape and write the table the
kernels read (halinfer/kernels/triton/moe_configs/, see moe_tuning.py).

    python benchmarks/tune_moe.py                       # Qwen3-30B-A3B's experts (E 128, H 2048, I 768, top-8)
    python benchmarks/tune_moe.py --experts 64 --hidden 2048 --inter 1408 --top-k 6 --tokens 1,64,1024

For each step size (tokens) and each BLOCK_M, gemm1's tiles are swept with gemm2's held at the
rule's, then gemm2's with gemm1's best; the fastest (BLOCK_M, gemm1, gemm2) per step size is kept.
Times are CUDA-event medians of whole fused_moe calls replayed from CUDA graphs (routing drawn from random logits through
the Triton router, so every expert is about equally loaded).  Prints the rule's time beside the
table's for each step size.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics

import torch

TILES = [(32, 128, 4, 4), (64, 128, 4, 4), (64, 64, 4, 4), (128, 64, 4, 3), (128, 64, 8, 3), (128, 128, 8, 3),
         (64, 256, 4, 3), (256, 64, 8, 3)]
BLOCK_MS = (16, 32, 64, 128)
DEFAULT_TOKENS = "1,2,4,8,16,32,64,128,192,256,384,512,1024,2048,4096,8192"


def timed(fn, reps: int) -> float:
    """Microseconds per call, replayed from a CUDA graph of 10 calls as the engine runs decode
    steps (eager timings of small steps would measure the host's launch cost); inf when the
    tiles do not fit the card."""
    try:
        fn()                                    # compile outside the capture
        torch.cuda.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            for _ in range(10):
                fn()
    except Exception as e:  # noqa: BLE001 - e.g. triton's OutOfResources for a tile too large
        print(f"  skipped: {type(e).__name__}: {str(e)[:100]}", flush=True)
        return float("inf")
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        graph.replay()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b) * 1e3 / 10)
    return statistics.median(times)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--experts", type=int, default=128)
    p.add_argument("--hidden", type=int, default=2048)
    p.add_argument("--inter", type=int, default=768)
    p.add_argument("--top-k", type=int, default=8)
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--tokens", default=DEFAULT_TOKENS)
    p.add_argument("--reps", type=int, default=10)
    p.add_argument("--out", default=None, help="default: the table path the kernels read")
    a = p.parse_args()

    from halinfer.kernels.triton.fused_moe import fused_moe
    from halinfer.kernels.triton.moe_route import route
    from halinfer.kernels.triton.moe_tuning import GemmTile, MoeConfig, card_name, default_config, table_path

    dev, dt = torch.device("cuda"), getattr(torch, a.dtype)
    E, H, I, k = a.experts, a.hidden, a.inter, a.top_k
    g = torch.Generator(device=dev).manual_seed(0)
    w13 = torch.randn(E, 2 * I, H, device=dev, dtype=dt, generator=g) / H ** 0.5
    w2 = torch.randn(E, H, I, device=dev, dtype=dt, generator=g) / I ** 0.5
    table, report = {}, []
    for T in [int(t) for t in a.tokens.split(",")]:
        x = torch.randn(T, H, device=dev, dtype=dt, generator=g)
        w, ids = route(torch.randn(T, E, device=dev, generator=g), k)
        run = lambda cfg: timed(lambda: fused_moe(x, w13, w2, w, ids, config=cfg), a.reps)  # noqa: E731
        rule = default_config(T, k, E, w13.element_size())
        t_rule = run(rule)
        best = (t_rule, rule)
        for bm in BLOCK_MS:
            if bm > 2 * max(16, T * k):      # tiles far beyond the whole step's pairs
                continue
            g1 = min((run(MoeConfig(bm, GemmTile(*t), rule.gemm2)), t) for t in TILES)[1]
            t2, g2 = min((run(MoeConfig(bm, GemmTile(*g1), GemmTile(*t))), t) for t in TILES)
            if t2 < best[0]:
                best = (t2, MoeConfig(bm, GemmTile(*g1), GemmTile(*g2)))
        table[str(T)] = best[1].to_json()
        report.append({"tokens": T, "rule_us": round(t_rule, 1), "table_us": round(best[0], 1),
                       "speedup": round(t_rule / best[0], 2), "config": best[1].to_json()})
        print(json.dumps(report[-1]), flush=True)
    out = a.out or table_path(E, H, I, dt, card_name(dev))
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump({"card": torch.cuda.get_device_name(dev), "shape": {"E": E, "H": H, "I": I, "top_k": k},
                   "dtype": a.dtype, "configs": table}, f, indent=1)
    print("wrote", out)


if __name__ == "__main__":
    main()
