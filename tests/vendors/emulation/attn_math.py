"""Attention of one sequence, written from the textbook definition (float32).

Shared by the emulated vendor attention ops; independent of halinfer's own
reference so that a plugin is checked against the vendor's documented math,
not against the code it might have copied.
"""
from __future__ import annotations

import torch


def attend_one(q, k, v, scale: float, *, causal: bool, window_left: int = -1, softcap: float = 0.0,
               alibi: torch.Tensor | None = None) -> torch.Tensor:
    """q [m, Hq, D], k [n, Hk, D], v [n, Hk, Dv] -> float32 [m, Hq, Dv].

    Query i sits at position n - m + i (bottom-right aligned: the last query is the
    last key).  causal: keys j <= that position.  window_left >= 0: also
    position - j <= window_left.  alibi [Hq]: adds -slope * (position - j).
    """
    m, hq, _ = q.shape
    n, hk, _ = k.shape
    if m == 0:
        return torch.zeros(0, hq, v.shape[-1])
    assert hq % hk == 0, (hq, hk)
    g = hq // hk
    kf = k.float().repeat_interleave(g, dim=1)
    vf = v.float().repeat_interleave(g, dim=1)
    s = torch.einsum("mhd,nhd->hmn", q.float(), kf) * scale
    if softcap:
        s = softcap * torch.tanh(s / softcap)
    qpos = torch.arange(n - m, n)[:, None]
    kpos = torch.arange(n)[None, :]
    if alibi is not None:
        s = s - alibi.float()[:, None, None] * (qpos - kpos)
    ok = torch.ones(m, n, dtype=torch.bool)
    if causal:
        ok &= kpos <= qpos
    if window_left >= 0:
        ok &= (qpos - kpos) <= window_left
    s = s.masked_fill(~ok, float("-inf"))
    p = torch.softmax(s, dim=-1)
    return torch.einsum("hmn,nhd->mhd", p, vf)


def gather_paged(cache: torch.Tensor, table_row: torch.Tensor, n: int, block_size: int, layout: str):
    """The first n tokens of one sequence from a paged cache, [n, H, D].

    layout "NHD": cache [blocks, block_size, H, D]; "HND": [blocks, H, block_size, D].
    """
    pos = torch.arange(n)
    blocks = table_row.long()[pos // block_size]
    off = pos % block_size
    if layout == "NHD":
        return cache[blocks, off]
    return cache[blocks, :, off]
