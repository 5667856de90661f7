"""Where the time of one step goes: a decode step and a mixed (prefill + decode) step.

    python benchmarks/profile_step.py --model llama3-8b --batch 64 --context 300

Runs eagerly (so every kernel shows), with random weights, and prints the
profiler's table of device time by kernel plus the host time of the step's
phases (schedule, prepare, forward, sample, post-process).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from throughput import model_dir_for  # noqa: E402


def timed_step(eng):
    """One engine step with host-side phase timings (ms): schedule (planning included),
    launch (inputs, forward, sampling queued), collect (wait for the tokens), update."""
    core = eng.core
    t0 = time.perf_counter()
    batch = core.scheduler.schedule()
    t1 = time.perf_counter()
    handle = core.executor.launch(batch.plan)
    t2 = time.perf_counter()
    out = core.executor.collect(handle)
    t3 = time.perf_counter()
    eng.outputs.process(core.scheduler.update(batch, out))
    t4 = time.perf_counter()
    return batch, {"schedule_ms": 1e3 * (t1 - t0), "launch_ms": 1e3 * (t2 - t1),
                   "collect_ms(device wait)": 1e3 * (t3 - t2), "update_ms": 1e3 * (t4 - t3)}


def profile(eng, label, rows=18):
    from torch.profiler import ProfilerActivity, profile as tprof

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if eng.device.type == "cuda" else [])
    with tprof(activities=acts) as prof:
        batch, phases = timed_step(eng)
    print(f"\n=== {label}: {len(batch.seqs)} sequences, {batch.num_tokens} tokens ===")
    print("host phases:", {k: round(v, 3) for k, v in phases.items()})
    key = "self_cuda_time_total" if eng.device.type == "cuda" else "self_cpu_time_total"
    print(prof.key_averages().table(sort_by=key, row_limit=rows, max_name_column_width=60))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="llama3-8b")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--context", type=int, default=300)
    p.add_argument("--prefill", type=int, default=400, help="prompt length joining in the mixed step")
    p.add_argument("--gpu-memory-utilization", type=float, default=0.6)
    a = p.parse_args()

    from halinfer import LLM, SamplingParams

    model_dir, _ = model_dir_for(a.model)
    llm = LLM(model_dir, device=a.device, dtype=a.dtype, load_format="dummy", enforce_eager=True,
              async_scheduling=False,  # one step at a time, so each profile holds exactly one
              gpu_memory_utilization=a.gpu_memory_utilization, max_num_seqs=max(a.batch + 1, 8))
    eng = llm.engine
    rng = np.random.default_rng(0)
    sp = SamplingParams(temperature=0, max_tokens=64, ignore_eos=True)
    for _ in range(a.batch):
        eng.add_request(None, sp, rng.integers(100, 30000, size=a.context).tolist())
    while any(s.num_computed < s.num_prompt for s in eng.scheduler.running) or eng.scheduler.waiting:
        eng.step()
    for _ in range(3):  # warm decode steps
        eng.step()
    profile(eng, "decode step")
    eng.add_request(None, sp, rng.integers(100, 30000, size=a.prefill).tolist())
    profile(eng, "mixed step (one prefill joins the decodes)")


if __name__ == "__main__":
    main()
