"""Device time of one op call, for the kernel benchmarks."""
from __future__ import annotations

import torch
import triton.testing


def device_us(fn, reps: int = 10) -> float:
    """Microseconds per call with `reps` calls replayed from one CUDA graph, so host launch
    costs (tens of us per call for torch._scaled_mm and Triton's launcher) do not count, as
    they do not in the engine's captured decode steps; plain do_bench if capture fails."""
    fn()
    torch.cuda.synchronize()
    try:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            fn()
        torch.cuda.current_stream().wait_stream(side)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            for _ in range(reps):
                fn()
    except RuntimeError as e:
        print(f"  (graph capture failed, timing eagerly: {str(e)[:80]})")
        return triton.testing.do_bench(fn, warmup=10, rep=40, return_mode="median") * 1e3
    return triton.testing.do_bench(g.replay, warmup=5, rep=50, return_mode="median") * 1e3 / reps
