"""Tile configurations of the Triton prefill attention kernel, timed on the device.

    python benchmarks/tune_prefill.py                  # Llama-3-8B heads: 32 q, 8 kv, head_dim 128
    python benchmarks/tune_prefill.py --kv int4,int4-direct,none   # over a quantized cache (filled by store_kv)

A quantized mode alone goes through the launcher's model-dtype copy of the step's blocks
(kernels/triton/kv_dequant.py) where prefill_copy takes it; "<mode>-direct" reads the cache in
the kernel (the copy switched off).

Cases: one 7,680-token prompt (the long-prompt TTFT row) and 20 prompts of 400 tokens
(offline-1000's prefill steps).  Each config's output is checked against the current
default's; times are the median of CUDA-event timings.  Prints TFLOP/s per config.
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from halinfer.core.attention import LayerKV, MetadataBuilder, StepInputs  # noqa: E402
from halinfer.kernels.triton import attention_prefill as ap  # noqa: E402

CONFIGS = [(128, 64, 8, 2), (128, 64, 8, 3), (128, 128, 8, 2), (128, 32, 4, 3), (64, 64, 4, 3),
           (128, 64, 4, 3), (128, 128, 8, 3), (64, 128, 4, 2), (64, 32, 4, 4), (128, 32, 8, 4),
           (64, 32, 4, 3), (128, 32, 4, 2), (64, 64, 4, 2)]


def quant_cache(k, v, slots, mode):
    """An empty cache of `mode` ("int8", "fp8", "int4") the shape of k / v, filled with the
    tokens at `slots` by the CUDA store_kv, as the engine's cache would be."""
    from halinfer.kernels.triton.ops import TritonOps
    nb, bs, hk, d = k.shape
    store = {"int8": (torch.int8, d), "fp8": (torch.float8_e4m3fn, d), "int4": (torch.uint8, d // 2)}[mode]
    cache = lambda: torch.zeros(nb, bs, hk, store[1], device=k.device, dtype=store[0])  # noqa: E731
    sc = lambda: torch.zeros(nb, bs, hk, device=k.device)  # noqa: E731
    kv = LayerKV(cache(), cache(), "NHD", sc(), sc(), quant=mode,
                 k_zero=sc() if mode == "int4" else None, v_zero=sc() if mode == "int4" else None)
    flat = lambda t: t.reshape(nb * bs, hk, d)[slots]  # noqa: E731
    TritonOps().store_kv(flat(k), flat(v), kv, slots)
    return kv


def case(lens, hq, hk, d, bs, dev, dtype, kv_mode="none"):
    n_blocks = sum(-(-n // bs) for n in lens) + 1
    k = torch.randn(n_blocks, bs, hk, d, device=dev, dtype=dtype)
    v = torch.randn_like(k)
    width = max(-(-n // bs) for n in lens)
    tables = np.zeros((len(lens), width), np.int32)
    nxt = 1
    for i, n in enumerate(lens):
        m = -(-n // bs)
        tables[i, :m] = np.arange(nxt, nxt + m)
        nxt += m
    q_lens = np.array(lens, np.int32)
    slots = np.concatenate([tables[i, np.arange(n) // bs] * bs + np.arange(n) % bs for i, n in enumerate(lens)])
    step = StepInputs(q_lens, q_lens.copy(), tables, slots.astype(np.int64), bs)
    meta = MetadataBuilder(torch.device(dev), bs).build(step)
    q = torch.randn(int(q_lens.sum()), hq, d, device=dev, dtype=dtype)
    if kv_mode != "none":
        return q, quant_cache(k, v, torch.as_tensor(slots, device=dev), kv_mode), meta
    return q, LayerKV(k, v, "NHD"), meta


def flops(lens, hq, d):
    return sum(2 * 2 * n * (n + 1) / 2 * d * hq for n in lens)


def time_it(fn, reps=10):
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(reps):
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        ts.append(start.elapsed_time(end))
    return float(np.median(ts))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--hq", type=int, default=32)
    p.add_argument("--hk", type=int, default=8)
    p.add_argument("--head-dim", type=int, default=128)
    p.add_argument("--block-size", type=int, default=16)
    p.add_argument("--kv", default="none", help="cache dtypes to time, e.g. int4,none (none: the model dtype)")
    p.add_argument("--cases", default="long,short")
    a = p.parse_args()
    dev, dtype = "cuda", torch.bfloat16
    default = ap.prefill_config
    cases = {"long": ("one 7680-token prompt", [7680]), "short": ("20 prompts of 400", [400] * 20)}
    from halinfer.kernels.triton import kv_dequant
    for label, (name, lens) in [(m, cases[c]) for c in a.cases.split(",") for m in a.kv.split(",")]:
        mode = label.removesuffix("-direct")
        kv_dequant.DEQUANT_MODES = set() if label.endswith("-direct") else {mode}
        q, kv, meta = case(lens, a.hq, a.hk, a.head_dim, a.block_size, dev, dtype, mode)
        scale = a.head_dim ** -0.5
        ref = ap.paged_attention_prefill(q, kv, meta, scale=scale)
        ms = time_it(lambda: ap.paged_attention_prefill(q, kv, meta, scale=scale))
        print(f"=== {name}, cache {label}: default config {default(a.head_dim, False, max(lens), max(lens))} "
              f"{ms:8.3f} ms {flops(lens, a.hq, a.head_dim) / ms / 1e9:7.1f} TFLOP/s")
        for cfg in CONFIGS:
            ap.prefill_config = lambda *args, _c=cfg, **kw: _c
            try:
                out = ap.paged_attention_prefill(q, kv, meta, scale=scale)
                err = (out.float() - ref.float()).abs().max().item()
                ms = time_it(lambda: ap.paged_attention_prefill(q, kv, meta, scale=scale))
                print(f"  BLOCK_M={cfg[0]:3d} BLOCK_N={cfg[1]:3d} warps={cfg[2]} stages={cfg[3]}: {ms:8.3f} ms "
                      f"{flops(lens, a.hq, a.head_dim) / ms / 1e9:7.1f} TFLOP/s  max|diff| {err:.2e}", flush=True)
            except Exception as e:  # noqa: BLE001 - a config that does not fit (shared memory) is reported
                print(f"  {cfg}: failed: {type(e).__name__}: {str(e)[:120]}", flush=True)
            finally:
                ap.prefill_config = default


if __name__ == "__main__":
    main()
