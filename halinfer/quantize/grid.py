"""Integer grids shared by the weight quantizers: group-wise scale and zero point of a
weight [N, K] (groups of ``group`` input channels per output row).

Scales are rounded to float16 before the integers are chosen, because AWQ and GPTQ
checkpoints store them as float16: the dense matrix a loader rebuilds is then exactly
(q - zero) * scale as computed here.
"""
from __future__ import annotations

import torch


def group_params(w: torch.Tensor, bits: int, sym: bool, zero_in_range: bool = True):
    """Scale and zero per row of ``w`` [R, g] (one group per row): float32 [R], int64 [R].

    Asymmetric: scale = (max - min) / (2^b - 1), zero = round(-min / scale).  With
    ``zero_in_range`` (GPTQ's convention) the range always includes 0; AWQ uses the plain
    min and max.  Symmetric (GPTQ): scale = 2 max|w| / (2^b - 1), zero = 2^(b-1).
    """
    top = (1 << bits) - 1
    if sym:
        amax = w.abs().amax(-1)
        scale = (2 * amax / top).clamp(min=1e-5).half().float()
        zero = torch.full_like(scale, (top + 1) // 2, dtype=torch.long)
        return scale, zero
    lo, hi = w.amin(-1), w.amax(-1)
    if zero_in_range:
        lo, hi = lo.clamp(max=0), hi.clamp(min=0)
    scale = ((hi - lo).clamp(min=1e-5) / top).half().float()
    zero = torch.round(-lo / scale).clamp(0, top).long()
    return scale, zero


def quantize_with(w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, bits: int) -> torch.Tensor:
    """Integers 0..2^b-1 of w [..., g] under per-row scale and zero [...]."""
    top = (1 << bits) - 1
    return torch.clamp(torch.round(w / scale[..., None]) + zero[..., None], 0, top).long()


def quantize_groups(w: torch.Tensor, bits: int, group: int, sym: bool = False, zero_in_range: bool = False):
    """Round-to-nearest of w [N, K] in groups along K: (q int64 [N, K], scale [N, G], zero
    int64 [N, G], dense [N, K] = (q - zero) * scale)."""
    N, K = w.shape
    if K % group:
        raise ValueError(f"in_features {K} is not a multiple of the group size {group}")
    wg = w.reshape(N, K // group, group)
    scale, zero = group_params(wg, bits, sym, zero_in_range)
    q = quantize_with(wg, scale, zero, bits)
    dense = (q - zero[..., None]).float() * scale[..., None]
    return q.reshape(N, K), scale, zero, dense.reshape(N, K)
