"""W4A16 on npu_weight_quant_batchmatmul, from the core's AWQ tensors (vendors/ascend.md §7).

The op computes ``x @ ((w + offset) * scale)`` with ``w`` signed int4 packed
eight to an int32, nibble j of column c holding output column 8c + j.  AWQ
holds unsigned nibbles in the order [0, 2, 4, 6, 1, 3, 5, 7] and zero points:
``(q - z) * s = ((q - 8) + (8 - z)) * s``, so the weight is repacked in order
with each nibble XOR 8 (q - 8 in two's complement) and the offset is 8 - z
(dlinfer's Ascend AWQ format).  The repacked tensors are made once per weight
(on the first call: the warm-up run, before any graph capture) and kept while
the AWQ tensors live.
"""
from __future__ import annotations

import weakref

import torch

from halinfer.core.ops.quant import awq_unpack


def pack_int4_in_order(values: torch.Tensor) -> torch.Tensor:
    """int [R, N] of 0..15 -> int32 [R, N/8], nibble j of word c = column 8c + j, each XOR 8."""
    R, N = values.shape
    v = (values.to(torch.int64) ^ 8).reshape(R, N // 8, 8)
    shifts = torch.arange(0, 32, 4, device=values.device, dtype=torch.int64)
    word = (v << shifts).sum(-1)
    return torch.where(word >= (1 << 31), word - (1 << 32), word).to(torch.int32)


def awq_to_ascend(qweight, scales, qzeros):
    """(weight int32 [K, N/8], antiquant_offset [K/g, N] in scales' dtype)."""
    weight = pack_int4_in_order(awq_unpack(qweight))
    offset = (8 - awq_unpack(qzeros)).to(scales.dtype)
    return weight, offset


class _Prepared:
    """Converted tensors per live AWQ qweight (keyed by identity, dropped with it)."""

    def __init__(self):
        self._by_id: dict[int, tuple] = {}

    def get(self, qweight, qzeros, make):
        key = id(qweight)
        hit = self._by_id.get(key)
        if hit is not None and hit[0]() is qweight and hit[1]() is qzeros:
            return hit[2]
        value = make()
        ref = weakref.ref(qweight, lambda _r, k=key, d=self._by_id: d.pop(k, None))
        self._by_id[key] = (ref, weakref.ref(qzeros), value)
        return value


class AscendW4A16:
    def __init__(self, torch_npu):
        self.npu = torch_npu
        self.prepared = _Prepared()

    def __call__(self, x, qweight, scales, qzeros, group_size, bias=None):
        weight, offset = self.prepared.get(qweight, qzeros, lambda: awq_to_ascend(qweight, scales, qzeros))
        y = self.npu.npu_weight_quant_batchmatmul(x.reshape(-1, x.shape[-1]).contiguous(), weight, scales,
                                                  antiquant_offset=offset, antiquant_group_size=group_size)
        y = y.reshape(*x.shape[:-1], y.shape[-1])
        return y if bias is None else y + bias
