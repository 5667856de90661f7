"""Applying rotary embeddings to q and k (the cos/sin tables come from models/rope.py)."""
from __future__ import annotations

import torch


def rotary(q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor, cos_sin_cache: torch.Tensor,
           is_neox: bool = True):
    """Rotate the first ``rot_dim`` channels of every head of q and k.

    q: [T, Hq, D], k: [T, Hk, D] (model dtype).  positions: int64 [T].
    cos_sin_cache: float32 [max_pos, rot_dim]: columns ``[:rot_dim/2]`` are cos,
    ``[rot_dim/2:]`` sin (any attention scaling factor already folded in).
    is_neox=True rotates the halves (x[:r/2], x[r/2:r]); False rotates interleaved
    pairs (x[0::2], x[1::2]) (GPT-J / GLM / DeepSeek style).
    Channels past rot_dim are unchanged.  Returns (q, k) as new tensors.
    """
    return rotate_with_table(q, k, cos_sin_cache.index_select(0, positions), is_neox)


def rotate_with_table(q: torch.Tensor, k: torch.Tensor, cs: torch.Tensor, is_neox: bool = True):
    """Ops.rotary with the table already gathered: cs float32 [T, rot_dim] (cos | sin per token)."""
    half = cs.shape[-1] // 2
    cos, sin = cs[:, None, :half], cs[:, None, half:]

    def apply(x):
        r = 2 * half
        xr = x[..., :r].float()
        if is_neox:
            x1, x2 = xr[..., :half], xr[..., half:]
            out = torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)
        else:
            x1, x2 = xr[..., 0::2], xr[..., 1::2]
            out = torch.stack((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1).flatten(-2)
        out = out.to(x.dtype)
        return out if r == x.shape[-1] else torch.cat((out, x[..., r:]), dim=-1)

    return apply(q), apply(k)
