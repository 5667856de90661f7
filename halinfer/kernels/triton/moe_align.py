"""Grouping a MoE step's (token, choice) pairs by expert, on the device.

Every M-tile of the expert GEMMs must belong to one expert, so the T*k pair ids
(t * k + j) are laid out expert by expert, each expert's run padded to a multiple
of BLOCK_M with the sentinel id T*k.  Buffers have the worst-case size,
T*k + min(T*k, E) * (BLOCK_M - 1) rounded up to BLOCK_M, so no size depends on the
routing (graph-capturable); tiles past the last run get expert id E and return.

The order inside an expert's run is the pairs' own order (a stable sort), so both
paths below give the same buffers.  Small steps (decode) take two Triton launches:
per-chunk histograms, then each chunk places its pairs from the histograms of the
chunks before it.  The torch path (sort + scatter, about a dozen launches) takes
large steps, where one launch more or less is noise beside the GEMMs.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .common import cdiv, next_pow2

CHUNK = 64              # pairs per program
MAX_CHUNKS = 64         # the place kernel loads every chunk's histogram: keep it small
KERNEL_MAX_PAIRS = CHUNK * MAX_CHUNKS


def capacity(num_pairs: int, num_experts: int, block_m: int) -> int:
    return cdiv(num_pairs + min(num_pairs, num_experts) * (block_m - 1), block_m) * block_m


@triton.jit
def _histogram_kernel(ids_ptr, hist_ptr, m, E, BLOCK_E: tl.constexpr, CHUNK: tl.constexpr):
    c = tl.program_id(0)
    p = c * CHUNK + tl.arange(0, CHUNK)
    e = tl.arange(0, BLOCK_E)
    ids = tl.load(ids_ptr + p, mask=p < m, other=-1)
    onehot = (ids[:, None] == e[None, :]).to(tl.int32)
    tl.store(hist_ptr + c * BLOCK_E + e, tl.sum(onehot, axis=0))


@triton.jit
def _place_kernel(ids_ptr, hist_ptr, pairs_ptr, block_expert_ptr, m, E, cap, num_chunks,
                  BLOCK_E: tl.constexpr, CHUNK: tl.constexpr, NC: tl.constexpr, BLOCK_M: tl.constexpr,
                  PAD: tl.constexpr):
    c = tl.program_id(0)
    e = tl.arange(0, BLOCK_E)
    emask = e < E
    rows = tl.arange(0, NC)
    hist = tl.load(hist_ptr + rows[:, None] * BLOCK_E + e[None, :], mask=(rows < num_chunks)[:, None], other=0)
    counts = tl.sum(hist, axis=0)
    padded = (counts + BLOCK_M - 1) // BLOCK_M * BLOCK_M
    pad_end = tl.cumsum(padded, axis=0)
    pad_start = pad_end - padded
    before = tl.sum(tl.where((rows < c)[:, None], hist, 0), axis=0)   # this expert's pairs in earlier chunks

    p = c * CHUNK + tl.arange(0, CHUNK)
    pm = p < m
    ids = tl.load(ids_ptr + p, mask=pm, other=-1)
    onehot = (ids[:, None] == e[None, :]).to(tl.int32)
    rank = tl.sum((tl.cumsum(onehot, axis=0) - onehot) * onehot, axis=1)
    base = tl.sum(onehot * (pad_start + before)[None, :], axis=1)
    tl.store(pairs_ptr + base + rank, p, mask=pm)

    if c == 0:
        # Sentinels go only where no pair lands, so no other program's store can race with them.
        j = tl.arange(0, PAD)
        slot = (pad_start + counts)[:, None] + j[None, :]
        tl.store(pairs_ptr + slot, m + slot * 0, mask=emask[:, None] & (slot < pad_end[:, None]))
        total = tl.sum(tl.where(emask, padded, 0), axis=0)
        for t0 in range(total // CHUNK * CHUNK, cap, CHUNK):
            q = t0 + tl.arange(0, CHUNK)
            tl.store(pairs_ptr + q, m + q * 0, mask=(q >= total) & (q < cap))
        for b0 in range(0, cap // BLOCK_M, CHUNK):
            b = b0 + tl.arange(0, CHUNK)
            starts = b * BLOCK_M
            be = tl.sum(((pad_end[None, :] <= starts[:, None]) & emask[None, :]).to(tl.int32), axis=1)
            tl.store(block_expert_ptr + b, be, mask=b < cap // BLOCK_M)


def _align_triton(flat: torch.Tensor, num_experts: int, block_m: int):
    m = flat.numel()
    cap = capacity(m, num_experts, block_m)
    dev = flat.device
    block_e = next_pow2(num_experts)
    chunks = cdiv(m, CHUNK)
    hist = torch.empty(chunks, block_e, dtype=torch.int32, device=dev)
    pairs = torch.empty(cap, dtype=torch.int32, device=dev)
    block_expert = torch.empty(cap // block_m, dtype=torch.int32, device=dev)
    _histogram_kernel[(chunks,)](flat, hist, m, num_experts, BLOCK_E=block_e, CHUNK=CHUNK)
    _place_kernel[(chunks,)](flat, hist, pairs, block_expert, m, num_experts, cap, chunks,
                             BLOCK_E=block_e, CHUNK=CHUNK, NC=next_pow2(chunks), BLOCK_M=block_m,
                             PAD=next_pow2(block_m))
    return pairs, block_expert


def _align_torch(flat: torch.Tensor, num_experts: int, block_m: int):
    flat = flat.to(torch.int64)
    m = flat.numel()
    dev = flat.device
    sorted_e, order = torch.sort(flat, stable=True)
    counts = torch.zeros(num_experts, dtype=torch.int64, device=dev).scatter_add_(0, flat, torch.ones_like(flat))
    padded = (counts + block_m - 1) // block_m * block_m
    pad_end = torch.cumsum(padded, 0)
    start = torch.cumsum(counts, 0) - counts
    dest = (pad_end - padded)[sorted_e] + torch.arange(m, device=dev) - start[sorted_e]
    cap = capacity(m, num_experts, block_m)
    pairs = torch.full((cap,), m, dtype=torch.int32, device=dev)
    pairs.scatter_(0, dest, order.to(torch.int32))
    tile_starts = torch.arange(0, cap, block_m, device=dev, dtype=torch.int64)
    block_expert = torch.searchsorted(pad_end, tile_starts, right=True).to(torch.int32)
    return pairs, block_expert


def align_pairs(topk_ids: torch.Tensor, num_experts: int, block_m: int, use_kernel: bool | None = None):
    """(pairs int32 [cap], block_expert int32 [cap / block_m]): pair ids grouped by expert (see the
    module docstring).  use_kernel None: the Triton path for steps of up to KERNEL_MAX_PAIRS pairs."""
    flat = topk_ids.reshape(-1)
    if use_kernel is None:
        use_kernel = flat.numel() <= KERNEL_MAX_PAIRS
    if use_kernel:
        return _align_triton(flat.to(torch.int32).contiguous(), num_experts, block_m)
    return _align_torch(flat, num_experts, block_m)
