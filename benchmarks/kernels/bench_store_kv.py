"""store_kv (this step's keys / values into the paged cache) at Llama-3-8B's KV shape: 8 kv heads,
head dim 128, bf16 input, block 16, NHD, the tokens' slots in random blocks.

For each cache dtype (none = bf16, int8, fp8, int4) and token count it times the launch under each
(num_warps, tokens a program) of the sweep (store_kv.STORE_OVERRIDE) and
the launcher's own choice ("auto"), as device time from a CUDA graph of 10 calls (timing.device_us),
and checks that every setting writes the same cache bytes, scales and zeros as "auto" (the same
arithmetic; only the work split differs).  Columns: microseconds, and input bytes read over that time.

Usage: python benchmarks/kernels/bench_store_kv.py [--tokens 1,64,512,1024] [--kv none,int8,fp8,int4]
"""
from __future__ import annotations

import argparse
import itertools
import os
import sys

import torch

from halinfer.core.attention import LayerKV
from halinfer.core.ops.kv_quant import kv_storage_dtype, kv_stored_dim
from halinfer.kernels.triton import store_kv as store_mod

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from timing import device_us  # noqa: E402

HK, D, BS = 8, 128, 16
DT = torch.bfloat16


def layer(mode, num_blocks, dev):
    shape = (num_blocks, BS, HK, kv_stored_dim(mode, D))
    dt = DT if mode is None else kv_storage_dtype(mode, DT)

    def c():
        return torch.zeros(shape, dtype=dt, device=dev)

    s = (lambda: torch.zeros(shape[:-1], device=dev)) if mode else (lambda: None)
    z = (lambda: torch.zeros(shape[:-1], device=dev)) if mode == "int4" else (lambda: None)
    return LayerKV(c(), c(), "NHD", s(), s(), quant=mode, k_zero=z(), v_zero=z())


def tensors(kv):
    return [t for t in (kv.k, kv.v, kv.k_scale, kv.v_scale, kv.k_zero, kv.v_zero) if t is not None]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", default="1,64,512,1024")
    ap.add_argument("--kv", default="none,int8,fp8,int4")
    ap.add_argument("--warps", default="1,2,4,8")
    ap.add_argument("--block-t", default="1,2,4")
    a = ap.parse_args()
    dev = torch.device("cuda", 0)
    gen = torch.Generator(device=dev).manual_seed(0)
    print(f"card: {torch.cuda.get_device_name(dev)}")
    print(f"{'kv':>5} {'T':>5} {'config':>12} {'us':>8} {'GB/s':>7}  same")
    for name in a.kv.split(","):
        mode = None if name == "none" else name
        for T in (int(t) for t in a.tokens.split(",")):
            nb = 2 * T // BS + 8
            k = torch.randn(T, HK, D, device=dev, dtype=DT, generator=gen)
            v = torch.randn(T, HK, D, device=dev, dtype=DT, generator=gen)
            slots = torch.randperm(nb * BS, device=dev, generator=gen)[:T]
            cfgs = [None] + list(itertools.product((int(x) for x in a.warps.split(",")),
                                                   (int(x) for x in a.block_t.split(","))))
            want = None
            rows = []
            for cfg in cfgs:
                store_mod.STORE_OVERRIDE = cfg
                try:
                    kv = layer(mode, nb, dev)
                    store_mod.store_kv(k, v, kv, slots)
                    got = [t.clone() for t in tensors(kv)]
                    if want is None:
                        want = got
                    same = all(torch.equal(g.view(torch.uint8), w.view(torch.uint8)) for g, w in zip(got, want))
                    us = device_us(lambda: store_mod.store_kv(k, v, kv, slots))
                finally:
                    store_mod.STORE_OVERRIDE = None
                label = "auto" if cfg is None else f"w{cfg[0]}t{cfg[1]}"
                rows.append((us, label, same))
                print(f"{name:>5} {T:>5} {label:>12} {us:>8.2f} {2 * k.numel() * 2 / us / 1e3:>7.0f}  {same}")
            best = min(rows)
            print(f"{name:>5} {T:>5} best {best[1]} {best[0]:.2f} us vs auto {rows[0][0]:.2f} us")


if __name__ == "__main__":
    main()
