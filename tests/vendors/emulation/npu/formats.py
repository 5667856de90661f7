"""torch_npu's internal tensor formats, emulated: ND (2) by default, FRACTAL_NZ (29)
for tensors made by ``empty_with_format(..., acl_format=29)`` or ``npu_format_cast(t, 29)``.

A real NPU tensor carries its format in its storage descriptor; CPU tensors do not,
so the format is kept here per tensor object (dropped when the tensor dies).  Schemas
(torch_npu/csrc/aten/npu_native_functions.yaml) are in releases.json.
"""
from __future__ import annotations

import weakref

import torch

ND, NZ = 2, 29
_FORMATS: dict[int, tuple[weakref.ref, int]] = {}


def set_format(t: torch.Tensor, fmt: int) -> torch.Tensor:
    key = id(t)
    _FORMATS[key] = (weakref.ref(t, lambda _r, k=key: _FORMATS.pop(k, None)), fmt)
    return t


def format_of(t: torch.Tensor) -> int:
    hit = _FORMATS.get(id(t))
    return hit[1] if hit is not None and hit[0]() is t else ND


def empty_with_format(size, dtype=None, layout=None, device=None, pin_memory=None, acl_format=ND):
    return set_format(torch.zeros(tuple(size), dtype=dtype, device=device), int(acl_format))


def npu_format_cast(self, acl_format):
    return set_format(self.clone(), int(acl_format))


def get_npu_format(self):
    return format_of(self)


def nz_cache_to_nd(c: torch.Tensor, heads: int) -> torch.Tensor:
    """(nb, heads*D/16, bs, 16) NZ cache -> (nb, bs, heads, D): hidden index h*D + d lives
    at [.., (h*D + d) // 16, slot, (h*D + d) % 16] (vllm-ascend 310P cache shape)."""
    nb, g, bs, _ = c.shape
    return c.permute(0, 2, 1, 3).reshape(nb, bs, heads, g * 16 // heads)


def nz_mask_to_nd(m: torch.Tensor) -> torch.Tensor:
    """(1, cols/16, rows, 16) FRACTAL_NZ mask (vllm-ascend nd_to_nz_2d) -> (rows, cols)."""
    _, g, rows, _ = m.shape
    return m[0].permute(1, 0, 2).reshape(rows, g * 16)
