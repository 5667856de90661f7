"""Where the wall time of real engine steps goes, with CUDA graphs and async scheduling on
(profile_step.py profiles single eager steps; this one the engine as it runs).

    python benchmarks/profile_timeline.py --model llama3-8b --batch 1 --context 128 --steps 32
    python benchmarks/profile_timeline.py --model llama3-8b --prefill 7680      # one long prompt's TTFT
    python benchmarks/profile_timeline.py --batch 256 --context 512 --kv-cache-dtype int4 --quantization fp8

Prints, over the profiled window: wall time, device-busy time (the union of kernel and copy
intervals) and idle time between them, kernels per step, and the kernels by total time.
"""
from __future__ import annotations

import argparse
import collections
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from throughput import QUANT_CONFIGS, model_dir_for, with_quantization  # noqa: E402


def device_events(prof):
    """(name, start_us, end_us) of every device-side event (kernels, copies, memsets)."""
    out = []
    for e in prof.events():
        if getattr(e, "device_type", None) is not None and str(e.device_type).endswith("CUDA"):
            start = e.time_range.start
            out.append((e.name, start, start + e.time_range.elapsed_us()))
    return sorted(out, key=lambda t: t[1])


def summarize(events, wall_s: float, steps: int, rows: int) -> None:
    busy, end = 0.0, -1.0
    for _, s, e in events:
        if e <= end:
            continue
        busy += e - max(s, end)
        end = e
    span = (events[-1][2] - events[0][1]) if events else 0.0
    by = collections.defaultdict(lambda: [0, 0.0])
    for n, s, e in events:
        by[n][0] += 1
        by[n][1] += e - s
    print(f"wall {wall_s * 1e3:.2f} ms over {steps} steps ({wall_s * 1e3 / max(steps, 1):.3f} ms/step); "
          f"device span {span / 1e3:.2f} ms, busy {busy / 1e3:.2f} ms ({100 * busy / max(span, 1e-9):.1f}% of span), "
          f"idle {(span - busy) / 1e3:.2f} ms; {len(events) / max(steps, 1):.1f} device events per step")
    for n, (c, t) in sorted(by.items(), key=lambda kv: -kv[1][1])[:rows]:
        print(f"  {t / 1e3 / max(steps, 1):8.4f} ms/step  {c / max(steps, 1):6.1f}/step  {n[:110]}")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="llama3-8b")
    p.add_argument("--device", default="cuda")
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--context", type=int, default=128)
    p.add_argument("--steps", type=int, default=32)
    p.add_argument("--prefill", type=int, default=0, help="profile one prompt of this length, 1 new token")
    p.add_argument("--max-num-seqs", type=int, default=None)
    p.add_argument("--gpu-memory-utilization", type=float, default=0.85)
    p.add_argument("--rows", type=int, default=25)
    p.add_argument("--quantization", default=None, choices=tuple(QUANT_CONFIGS))
    p.add_argument("--kv-cache-dtype", default="auto", choices=("auto", "int8", "int4", "fp8"))
    a = p.parse_args()

    from torch.profiler import ProfilerActivity, profile

    from halinfer import LLM, SamplingParams

    model_dir, temp = model_dir_for(a.model)
    if a.quantization:
        model_dir, _ = with_quantization(model_dir, temp, a.quantization)
    kw = dict(max_model_len=a.prefill + 64) if a.prefill else {}
    if a.kv_cache_dtype != "auto":
        kw["kv_cache_dtype"] = a.kv_cache_dtype
    llm = LLM(model_dir, device=a.device, dtype=a.dtype, load_format="dummy", max_num_seqs=a.max_num_seqs,
              gpu_memory_utilization=a.gpu_memory_utilization, **kw)
    eng, rt = llm.engine, llm.engine.runtime
    rng, hi = np.random.default_rng(0), min(30000, eng.vocab_size)
    acts = [ProfilerActivity.CPU, ProfilerActivity.CUDA]
    if a.prefill:
        one = SamplingParams(temperature=0, max_tokens=1, ignore_eos=True)
        for _ in range(2):   # warm-up: the first long prompt compiles the kernels for its shapes
            llm.generate(prompt_token_ids=[rng.integers(100, hi, size=a.prefill).tolist()], sampling_params=one,
                         use_tqdm=False)
        rt.synchronize()
        with profile(activities=acts) as prof:
            t = time.perf_counter()
            llm.generate(prompt_token_ids=[rng.integers(100, hi, size=a.prefill).tolist()], sampling_params=one,
                         use_tqdm=False)
            rt.synchronize()
            wall = time.perf_counter() - t
        print(f"=== one {a.prefill}-token prompt, 1 new token (TTFT as the engine runs it)")
        summarize(device_events(prof), wall, 1, a.rows)
        return
    sp = SamplingParams(temperature=0, max_tokens=a.steps * 3 + 16, ignore_eos=True)
    for _ in range(a.batch):
        eng.add_request(None, sp, rng.integers(100, hi, size=a.context).tolist())
    for _ in range(a.steps):   # prefill and warm decode steps
        eng.step()
    rt.synchronize()
    with profile(activities=acts) as prof:
        t = time.perf_counter()
        for _ in range(a.steps):
            eng.step()
        rt.synchronize()
        wall = time.perf_counter() - t
    print(f"=== {a.steps} decode steps at batch {a.batch}, context {a.context}, graphs={eng.graphs}")
    summarize(device_events(prof), wall, a.steps, a.rows)


if __name__ == "__main__":
    main()
