"""Vision-encoder operators: patch embedding, bidirectional varlen attention over packed
patches (no KV cache), and multimodal rotary (M-RoPE)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .rotary import rotate_with_table


def patch_embed(patches: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """patches [N, C, *k] (k: the kernel, e.g. (P, P) or (T, P, P)), weight [E, C, *k] (a
    convolution whose stride is its kernel), bias [E] or None -> [N, E] in weight's dtype."""
    n, e = patches.shape[0], weight.shape[0]
    return F.linear(patches.reshape(n, -1).to(weight.dtype), weight.reshape(e, -1), bias)


def vision_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens: torch.Tensor,
                     scale: float) -> torch.Tensor:
    """Bidirectional attention within each packed sequence (an image, or a window of one).

    q, k, v: [N, H, D] (same head count); cu_seqlens: int32/int64 [S+1], cumulative lengths
    starting at 0 and ending at N.  Token i attends to every token of its own sequence.
    Returns [N, H, D] in q's dtype (softmax in float32)."""
    out = torch.empty_like(q)
    bounds = cu_seqlens.tolist()
    for a, b in zip(bounds[:-1], bounds[1:]):
        if b <= a:
            continue
        qs, ks, vs = (t[a:b].transpose(0, 1).float() for t in (q, k, v))   # [H, n, D]
        w = torch.softmax((qs @ ks.transpose(1, 2)) * scale, dim=-1)
        out[a:b] = (w @ vs).transpose(0, 1).to(q.dtype)
    return out


def mrope_table(positions: torch.Tensor, cos_sin_cache: torch.Tensor, mrope_section: list[int],
                interleaved: bool = False) -> torch.Tensor:
    """float32 [T, rot]: per-token cos|sin where frequency j takes the position of its
    section's axis: the first mrope_section[0] frequencies follow positions[0] (time), the
    next mrope_section[1] positions[1] (height), the rest positions[2] (width).
    interleaved (Qwen3-VL): frequency j follows height when j % 3 == 1 and j < 3 *
    mrope_section[1], width when j % 3 == 2 and j < 3 * mrope_section[2], else time."""
    half = cos_sin_cache.shape[-1] // 2
    assert sum(mrope_section) == half, f"mrope_section {mrope_section} must sum to rotary_dim/2 = {half}"
    if interleaved:
        j = torch.arange(half, device=positions.device)
        axis = torch.zeros(half, dtype=torch.long, device=positions.device)
        axis[(j % 3 == 1) & (j < 3 * mrope_section[1])] = 1
        axis[(j % 3 == 2) & (j < 3 * mrope_section[2])] = 2
    else:
        axis = torch.repeat_interleave(torch.arange(len(mrope_section), device=positions.device),
                                       torch.tensor(mrope_section, device=positions.device))
    axis = torch.cat((axis, axis))                                          # cos columns, then sin
    per_axis = cos_sin_cache[positions]                                     # [3, T, rot]
    return per_axis.gather(0, axis.view(1, 1, -1).expand(1, positions.shape[1], -1)).squeeze(0)


def mrope(q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor, cos_sin_cache: torch.Tensor,
          mrope_section: list[int], is_neox: bool = True, interleaved: bool = False):
    """Rotary with 3-D positions (Qwen2-VL's M-RoPE).  q [T, Hq, D], k [T, Hk, D];
    positions int64 [3, T] (time, height, width; equal rows for text tokens, which makes
    this Ops.rotary); cos_sin_cache as Ops.rotary's; interleaved: Qwen3-VL's frequency
    layout (mrope_table).  Returns new (q, k)."""
    return rotate_with_table(q, k, mrope_table(positions, cos_sin_cache, mrope_section, interleaved), is_neox)
