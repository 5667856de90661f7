"""The Atlas 300I Duo (310P) KV cache and mask in FRACTAL_NZ, as its ATB ops take them.

Facts (docs/vendors.md, Ascend 310P): op-plugin ``_atb_api_docs.py`` (``_npu_paged_attention``
section) gives the "Atlas 推理系列产品" caches as ``(num_blocks, kv_heads*head_dim/16,
block_size, 16)`` in NZ, float16 only, ``block_size % 16 == 0``, ``<= 128`` and
``block_size * head_dim <= 128 * 128``; vllm-ascend (``vllm_ascend/_310p/``) allocates
them with ``torch_npu.empty_with_format(..., acl_format=29)``, casts the prefill mask with
``nd_to_nz_2d`` + ``npu_format_cast(mask, 29)`` and pads prefill tokens to a multiple of 16.
Hidden channel c = h*head_dim + d of the token in slot s lives at
``cache[s // block_size, c // 16, s % block_size, c % 16]``.
"""
from __future__ import annotations

import torch

from halinfer.core.attention import LayerKV

ACL_FORMAT_FRACTAL_NZ = 29
MAX_BLOCK_HEAD = 128 * 128
TOKEN_ALIGN = 16


def round_up(n: int, m: int) -> int:
    return -(-n // m) * m


def cache_shape(num_blocks: int, block_size: int, kv_heads: int, head_dim: int) -> tuple:
    hidden = kv_heads * head_dim
    if block_size % 16 or block_size > 128 or block_size * head_dim > MAX_BLOCK_HEAD or hidden % 16:
        raise ValueError(f"Atlas 300I Duo (310P): ATB paged attention needs block_size % 16 == 0, block_size <= "
                         f"128, block_size * head_dim <= {MAX_BLOCK_HEAD} and kv_heads*head_dim % 16 == 0; got "
                         f"block_size {block_size}, {kv_heads} x {head_dim} (for head_dim 256 use block_size 64)")
    return (num_blocks, hidden // 16, block_size, 16)


def allocate(torch_npu, shape: tuple, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    return torch_npu.empty_with_format(list(shape), dtype=dtype, device=device, acl_format=ACL_FORMAT_FRACTAL_NZ)


def rows(cache: torch.Tensor, slots: torch.Tensor, kv_heads: int) -> torch.Tensor:
    """The cached (T, kv_heads, head_dim) rows of the tokens in ``slots`` (int, >= 0)."""
    bs = cache.shape[2]
    s = slots.long()
    return cache[s // bs, :, s % bs, :].reshape(s.shape[0], kv_heads, -1)


def to_nhd(kv: LayerKV, head_dim: int) -> LayerKV:
    """An NHD copy of an NZ layer cache, for the core's reference ops (fallback paths only:
    it copies the whole cache)."""
    def one(c):
        nb, g, bs, _ = c.shape
        return c.permute(0, 2, 1, 3).reshape(nb, bs, g * 16 // head_dim, head_dim)

    return LayerKV(one(kv.k), one(kv.v), "NHD")


def causal_mask(torch_npu, size: int, device) -> torch.Tensor:
    """(1, size/16, size, 16) float16 NZ mask, -inf above the diagonal (vllm-ascend's 310P mask)."""
    m = torch.zeros(size, size, dtype=torch.float16, device=device)
    m.masked_fill_(torch.ones(size, size, dtype=torch.bool, device=device).triu_(1), float("-inf"))
    nz = m.reshape(1, size, size // 16, 16).transpose(1, 2).contiguous()
    return torch_npu.npu_format_cast(nz, ACL_FORMAT_FRACTAL_NZ)


def pad_rows(x: torch.Tensor, n: int) -> torch.Tensor:
    """x with zero rows appended up to n rows (contiguous)."""
    if x.shape[0] == n:
        return x.contiguous()
    return torch.cat((x, x.new_zeros(n - x.shape[0], *x.shape[1:])), 0)
