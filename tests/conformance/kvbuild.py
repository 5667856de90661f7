"""Building paged KV caches and steps for the store_kv / paged_attention tests.

Written independently of core/ops/paged.py: cache rows are addressed through
flat row indices computed from the layout definitions in core/backend.py
("NHD": [blocks, block, heads, dim], "HND": [blocks, heads, block, dim]).
Blocks are handed out in a random order; block 0 and the last block are never
handed out, so they stay poisoned (block tables are padded with 0, and a slot
of -1 misused as an index lands in the last block).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from halinfer.core.attention import LayerKV, StepInputs

SENTINEL_INT8 = 77   # poison for int8 caches (their scales are poisoned with NaN)


def cache_shape(layout: str, num_blocks: int, bs: int, hk: int, d: int) -> tuple:
    return (num_blocks, bs, hk, d) if layout == "NHD" else (num_blocks, hk, bs, d)


def flat_rows(layout: str, slots: torch.Tensor, hk: int, bs: int) -> torch.Tensor:
    """[n, Hk] row index of (slot, head) in the cache viewed as [-1, D]."""
    slots = slots.long()[:, None]
    h = torch.arange(hk)[None, :]
    if layout == "NHD":
        return slots * hk + h
    blk, off = slots // bs, slots % bs
    return blk * (hk * bs) + h * bs + off


def poisoned_cache(layout, num_blocks, bs, hk, d, dtype, device, int8=False):
    """(cache, scales): NaN everywhere (int8: SENTINEL_INT8 and NaN scales)."""
    shape = cache_shape(layout, num_blocks, bs, hk, d)
    if not int8:
        return torch.full(shape, float("nan"), dtype=dtype, device=device), None
    scales = torch.full(shape[:-1], float("nan"), dtype=torch.float32, device=device)
    return torch.full(shape, SENTINEL_INT8, dtype=torch.int8, device=device), scales


def write_rows(cache, layout, slots, x, bs):
    """Place x [n, Hk, D] (cast to the cache dtype) at ``slots``."""
    hk, d = x.shape[1], x.shape[2]
    rows = flat_rows(layout, slots.cpu(), hk, bs).flatten().to(cache.device)
    cache.view(-1, d)[rows] = x.reshape(-1, d).to(cache.device, cache.dtype)


def write_scales(scales, layout, slots, s, bs):
    hk = s.shape[1]
    rows = flat_rows(layout, slots.cpu(), hk, bs).flatten().to(scales.device)
    scales.view(-1)[rows] = s.reshape(-1).to(scales.device, torch.float32)


def read_rows(cache, layout, slots, hk, bs):
    d = cache.shape[-1]
    rows = flat_rows(layout, slots.cpu(), hk, bs).flatten().to(cache.device)
    return cache.reshape(-1, d)[rows].view(len(slots), hk, d)


def read_scales(scales, layout, slots, hk, bs):
    rows = flat_rows(layout, slots.cpu(), hk, bs).flatten().to(scales.device)
    return scales.reshape(-1)[rows].view(len(slots), hk)


def quantize_int8(x: torch.Tensor):
    """Symmetric per-(token, head) int8 as the LayerKV contract states: x ~ q * s."""
    s = x.float().abs().amax(-1) / 127.0
    s = torch.where(s > 0, s, torch.full_like(s, 1e-8))
    q = torch.round(x.float() / s[..., None]).clamp(-127, 127).to(torch.int8)
    return q, s


@dataclass
class PagedPlan:
    """Sequences (ctx_i cached tokens + q_i new ones) laid out over random blocks."""

    step: StepInputs
    ctx_lens: list[int]
    q_lens: list[int]
    num_blocks: int
    block_size: int

    @property
    def seq_lens(self) -> list[int]:
        return [c + q for c, q in zip(self.ctx_lens, self.q_lens)]

    def seq_slots(self, i: int) -> torch.Tensor:
        """Cache slot of every position 0..seq_len-1 of sequence i."""
        bs, n = self.block_size, self.seq_lens[i]
        pos = np.arange(n)
        return torch.from_numpy(self.step.block_tables[i][pos // bs].astype(np.int64) * bs + pos % bs)


def plan(seqs: list[tuple[int, int]], bs: int, gen: torch.Generator, spare: int = 2) -> PagedPlan:
    ctx = [c for c, _ in seqs]
    ql = [q for _, q in seqs]
    assert all(q >= 1 for q in ql)
    nblk = [-(-(c + q) // bs) for c, q in seqs]
    num_blocks = sum(nblk) + spare + 2                        # + block 0 and the last, never handed out
    order = (torch.randperm(num_blocks - 2, generator=gen) + 1).tolist()
    width = max(nblk) + 1                                     # one padding column at least
    tables = np.zeros((len(seqs), width), dtype=np.int32)
    for i, nb in enumerate(nblk):
        tables[i, :nb] = order[:nb]
        order = order[nb:]
    seq_lens = np.array([c + q for c, q in seqs], dtype=np.int32)
    slots = []
    for i, (c, q) in enumerate(seqs):
        pos = np.arange(c, c + q)
        slots.append(tables[i][pos // bs].astype(np.int64) * bs + pos % bs)
    step = StepInputs(np.array(ql, dtype=np.int32), seq_lens, tables, np.concatenate(slots), bs)
    return PagedPlan(step, ctx, ql, num_blocks, bs)


def layer_kv(k, v, layout, k_scale=None, v_scale=None) -> LayerKV:
    return LayerKV(k=k, v=v, layout=layout, k_scale=k_scale, v_scale=v_scale)
