"""The MLA prefill attention, one tile variant per process, for running under compute-sanitizer
(docs/cuda_notes.md: the MLA fault).

    compute-sanitizer --tool memcheck python benchmarks/kernels/mla_prefill_check.py --variant base

Shapes (--shape): "tiny", DeepSeek-V2(-Lite)'s tiny test case (4 query heads over one latent head,
latent 32 + rope 8 = 40 channels, values the first 32), or "deepseek", the real one (16 heads,
512 + 64 channels, values 512).  Block size 8, prompts of 29, 13 + 5 and 21 tokens.  Variants
change only the launch: "base" as the launcher picks, "dv_pad" the value tile as wide as the key
tile (AttnArgs.block_dv now pads it to min(key tile, 64)), "stages1" no software pipelining,
"bn32" 32-key tiles.  Prints the largest difference from the core reference (same cache).
"""
from __future__ import annotations

import argparse

import numpy as np
import torch

from halinfer.core.attention import LayerKV, MetadataBuilder, StepInputs
from halinfer.core.ops import Ops
from halinfer.kernels.triton import attention_args, attention_prefill
from halinfer.kernels.triton.common import next_pow2
from halinfer.kernels.triton.ops import TritonOps

BS = 8
SHAPES = {"tiny": (4, 40, 32), "deepseek": (16, 576, 512)}   # query heads, latent + rope, values
SHAPE = SHAPES["tiny"]


def variant(name: str) -> None:
    if name == "dv_pad":
        attention_args.AttnArgs.block_dv = property(lambda a: max(16, next_pow2(max(a.D, a.DV))))
    elif name in ("stages1", "bn32"):
        orig = attention_prefill.prefill_config

        def cfg(*a, **k):
            m, n, w, s = orig(*a, **k)
            return (m, n, w, 1) if name == "stages1" else (m, 32, w, s)
        attention_prefill.prefill_config = cfg
    else:
        assert name == "base", f"unknown variant {name!r}: base, dv_pad, stages1, bn32"


def run(lens, quant, dtype, dev, gen) -> float:
    HQ, D, DV = SHAPE
    n_blocks = sum(-(-n // BS) for n in lens) + 2
    kc = torch.zeros(n_blocks, BS, 1, D, device=dev, dtype=torch.int8 if quant else dtype)
    ks = torch.ones(n_blocks, BS, 1, device=dev, dtype=torch.float32) if quant else None
    kv = LayerKV(kc, None, "NHD", ks, None, quant=quant)
    width = max(-(-n // BS) for n in lens)
    tables = np.zeros((len(lens), width), np.int32)
    nxt = 1
    for i, n in enumerate(lens):
        m = -(-n // BS)
        tables[i, :m] = np.arange(nxt, nxt + m)
        nxt += m
    q_lens = np.array(lens, np.int32)
    slots = np.concatenate([tables[i, np.arange(n) // BS] * BS + np.arange(n) % BS for i, n in enumerate(lens)])
    step = StepInputs(q_lens, q_lens.copy(), tables, slots.astype(np.int64), BS)
    meta = MetadataBuilder(dev, BS).build(step)
    T = int(q_lens.sum())
    q = torch.randn(T, HQ, D, device=dev, dtype=dtype, generator=gen)
    latent = torch.randn(T, 1, D, device=dev, dtype=dtype, generator=gen)
    tri, ref = TritonOps(), Ops()
    tri.store_kv(latent, None, kv, meta.slot_mapping)
    out = tri.paged_attention(q, kv, meta, scale=D ** -0.5, v_head_dim=DV)
    want = ref.paged_attention(q, kv, meta, scale=D ** -0.5, v_head_dim=DV)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    return float((out.float() - want.float()).abs().max())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--variant", default="base")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--shape", default="tiny", choices=tuple(SHAPES))
    ap.add_argument("--device", default="cuda", help="cpu: under TRITON_INTERPRET=1, to check the script")
    args = ap.parse_args()
    variant(args.variant)
    global SHAPE
    SHAPE = SHAPES[args.shape]
    dev = torch.device(args.device)
    gen = torch.Generator(device=dev).manual_seed(0)
    for quant in (None, "int8"):
        for dtype in (torch.bfloat16, torch.float16):
            for lens in ((29,), (13, 5), (21,)):
                errs = [run(lens, quant, dtype, dev, gen) for _ in range(args.reps)]
                print(f"{args.variant} {args.shape} kv={quant or 'model'} {str(dtype)[6:]} lens={lens}: max err {max(errs):.2e}",
                      flush=True)


if __name__ == "__main__":
    main()
