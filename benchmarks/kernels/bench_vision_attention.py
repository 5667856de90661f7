"""Which vision attention to use on a GPU (issue 15, item 5): times the core reference
(Ops.vision_attention: one float32 softmax(QK^T)V per cu_seqlens sequence) against torch SDPA
per sequence, SDPA over equal-length sequences stacked as a batch, and what the CUDA table
runs (kernels/vision_attention.py): varlen flash attention, and SDPA over equal-length runs.

    python benchmarks/kernels/bench_vision_attention.py --device cuda

Shapes: Qwen2.5-VL-3B's tower on 448x448 images (1024 patches, 16 heads x 80; windowed
layers: 16 windows of 64 patches per image) and InternViT-300M (1025 tokens, 16 x 64), for
1, 8 and 32 images.  Prints ms per call and the max error against the reference.
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from halinfer.core.ops import Ops
from halinfer.kernels import vision_attention as va

SHAPES = {"qwen2.5-vl full": (1024, 16, 80), "qwen2.5-vl window": (64, 16, 80), "internvit": (1025, 16, 64)}


def sdpa_per_seq(q, k, v, cu, scale):
    out = torch.empty_like(q)
    b = cu.tolist()
    for a, e in zip(b[:-1], b[1:]):
        out[a:e] = F.scaled_dot_product_attention(*(t[a:e].transpose(0, 1)[None] for t in (q, k, v)),
                                                  scale=scale)[0].transpose(0, 1)
    return out


def sdpa_batched(q, k, v, n, scale):
    """Every sequence has n tokens: one SDPA call over [S, H, n, D]."""
    S = q.shape[0] // n
    qb, kb, vb = (t.view(S, n, *t.shape[1:]).transpose(1, 2) for t in (q, k, v))
    return F.scaled_dot_product_attention(qb, kb, vb, scale=scale).transpose(1, 2).reshape(q.shape)


def timed(fn, sync, reps=10):
    fn()
    sync()
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    sync()
    return (time.perf_counter() - t0) / reps * 1e3


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", default="bfloat16")
    a = ap.parse_args()
    dev, dt = torch.device(a.device), getattr(torch, a.dtype)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    ref = Ops()
    print(f"{'shape':<20}{'images':>7}{'seqs':>6}{'reference ms':>14}{'sdpa/seq ms':>13}{'sdpa batch ms':>15}"
          f"{'sdpa runs ms':>14}{'varlen ms':>11}{'max err':>10}{'varlen err':>11}")
    for name, (n, H, D) in SHAPES.items():
        for images in (1, 8, 32):
            seqs = images * (16 if "window" in name else 1)
            q, k, v = (torch.randn(seqs * n, H, D, device=dev, dtype=dt) for _ in range(3))
            cu = torch.arange(0, seqs * n + 1, n, dtype=torch.int32, device=dev)
            s = D ** -0.5
            t_ref = timed(lambda: ref.vision_attention(q, k, v, cu, s), sync)
            t_seq = timed(lambda: sdpa_per_seq(q, k, v, cu, s), sync)
            t_bat = timed(lambda: sdpa_batched(q, k, v, n, s), sync)
            t_runs = timed(lambda: va.vision_attention(q, k, v, cu, s, impl="sdpa"), sync)
            y_var = va.varlen(q, k, v, cu, cu.tolist(), s) if dev.type == "cuda" else None
            t_var = timed(lambda: va.varlen(q, k, v, cu, cu.tolist(), s), sync) if y_var is not None else float("nan")
            want = ref.vision_attention(q, k, v, cu, s).float()
            err = (sdpa_batched(q, k, v, n, s).float() - want).abs().max()
            verr = (y_var.float() - want).abs().max() if y_var is not None else float("nan")
            print(f"{name:<20}{images:>7}{seqs:>6}{t_ref:>14.3f}{t_seq:>13.3f}{t_bat:>15.3f}{t_runs:>14.3f}"
                  f"{t_var:>11.3f}{float(err):>10.2e}{float(verr):>11.2e}", flush=True)
    if va._VARLEN_BROKEN:
        print(f"varlen_attn failed: {va._VARLEN_BROKEN}")


if __name__ == "__main__":
    main()
