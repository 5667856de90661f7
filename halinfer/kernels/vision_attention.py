"""Vision-tower attention (core/ops/vision.py: vision_attention) on fused attention kernels.

The reference runs one float32 softmax(QK^T)V per packed sequence: an image, or a window
of one (Qwen2.5-VL: 16 windows of 64 patches per 448x448 image in 28 of its 32 layers),
so thousands of small launches per image batch.  Here:

- "varlen": torch's varlen flash attention (torch.nn.attention.varlen.varlen_attn, where
  this torch has it and the device runs it), one launch for every sequence;
- "sdpa": F.scaled_dot_product_attention once per run of consecutive sequences of equal
  length, viewed as a batch (every window of an image but the edge ones, every tile of
  an InternVL image), so a handful of launches.

Both are bidirectional (no mask) within each sequence, softmax in float32 inside the
kernel; inputs stay in their 16-bit dtype (float32 inputs keep the reference, whose
accuracy the float32 tests rely on).  IMPL picks one; "auto" takes SDPA when the
sequences form at most SDPA_MAX_RUNS runs and varlen otherwise: on an H200 (bf16,
bench_vision_attention.py) SDPA was faster for whole images (32 InternViT images: 0.56
vs 0.68 ms) and varlen for windows (512 windows: 0.29 vs 0.33 ms); both are 15-240x
faster than the reference loop.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

IMPL = "auto"
SDPA_MAX_RUNS = 4
_VARLEN_BROKEN: dict = {}   # device type -> why varlen_attn failed once there


def _varlen():
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return None
    return varlen_attn


def _runs(bounds: list[int]):
    """(start, end, length) of each maximal run of consecutive sequences of equal length."""
    out = []
    i, S = 0, len(bounds) - 1
    while i < S:
        n = bounds[i + 1] - bounds[i]
        j = i + 1
        while j < S and bounds[j + 1] - bounds[j] == n:
            j += 1
        if n > 0:
            out.append((bounds[i], bounds[j], n))
        i = j
    return out


def sdpa_runs(q, k, v, runs: list[tuple[int, int, int]], scale: float) -> torch.Tensor:
    """runs: _runs(bounds)."""
    out = torch.empty_like(q)
    H, D = q.shape[1], q.shape[2]
    for a, b, n in runs:
        cnt = (b - a) // n
        qb, kb, vb = (t[a:b].view(cnt, n, H, t.shape[-1]).transpose(1, 2) for t in (q, k, v))
        o = F.scaled_dot_product_attention(qb, kb, vb, scale=scale)
        out[a:b] = o.transpose(1, 2).reshape(b - a, H, D)
    return out


def varlen(q, k, v, cu_seqlens: torch.Tensor, bounds: list[int], scale: float) -> torch.Tensor | None:
    fn = _varlen()
    if fn is None or q.device.type in _VARLEN_BROKEN:
        return None
    cu = cu_seqlens.to(device=q.device, dtype=torch.int32)
    longest = max(b - a for a, b in zip(bounds[:-1], bounds[1:]))
    try:
        return fn(q, k, v, cu, cu, longest, longest, scale=scale)
    except (RuntimeError, NotImplementedError, TypeError, ValueError) as e:
        _VARLEN_BROKEN[q.device.type] = f"{type(e).__name__}: {e}"
        return None


def vision_attention(q, k, v, cu_seqlens, scale, impl: str | None = None) -> torch.Tensor | None:
    """Ops.vision_attention's contract for 16-bit inputs; None when the caller should run the
    reference (float32 inputs)."""
    if q.dtype not in (torch.float16, torch.bfloat16):
        return None
    impl = impl or IMPL
    bounds = cu_seqlens.tolist()
    runs = _runs(bounds)
    if impl == "auto" and len(runs) <= SDPA_MAX_RUNS:
        impl = "sdpa"
    if impl in ("auto", "varlen") and q.device.type != "cpu":
        out = varlen(q, k, v, cu_seqlens, bounds, scale)
        if out is not None:
            return out
    return sdpa_runs(q, k, v, runs, scale)
