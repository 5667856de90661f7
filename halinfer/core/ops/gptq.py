"""GPTQ weight-only GEMM reference: 4- or 8-bit weights, group scales and zeros, ``g_idx``.

Packing (GPTQ checkpoints): ``qweight`` int32 [K * bits / 32, N], value i (bits b*i ..)
of word [r, n] is input row (32/bits)*r + i; ``qzeros`` int32 [G, N * bits / 32], value
i of word [g, c] is output column (32/bits)*c + i.  The op takes the *true* zero points
(GPTQModel's "v2" meaning); a v1 checkpoint stores zero - 1 and is converted on load
(``gptq_v1_to_v2_zeros``).  ``g_idx`` int32 [K] names the group of each input row:
i // group_size, or any permutation of groups when the checkpoint used act-order.
"""
from __future__ import annotations

import torch


def _shifts(bits: int, device) -> torch.Tensor:
    return torch.arange(0, 32, bits, device=device, dtype=torch.int32)


def gptq_unpack_rows(qweight: torch.Tensor, bits: int) -> torch.Tensor:
    """int32 [K*bits/32, N] -> int32 [K, N] (values 0 .. 2^bits - 1)."""
    v = (qweight[:, None, :] >> _shifts(bits, qweight.device)[None, :, None]) & ((1 << bits) - 1)
    return v.reshape(-1, qweight.shape[1])


def gptq_unpack_cols(qzeros: torch.Tensor, bits: int) -> torch.Tensor:
    """int32 [G, N*bits/32] -> int32 [G, N]."""
    v = (qzeros[:, :, None] >> _shifts(bits, qzeros.device)) & ((1 << bits) - 1)
    return v.reshape(qzeros.shape[0], -1)


def _to_int32(acc: torch.Tensor) -> torch.Tensor:
    return torch.where(acc >= (1 << 31), acc - (1 << 32), acc).to(torch.int32)


def gptq_pack_rows(values: torch.Tensor, bits: int) -> torch.Tensor:
    """Inverse of gptq_unpack_rows: int [K, N] -> int32 [K*bits/32, N]."""
    per = 32 // bits
    K, N = values.shape
    v = values.to(torch.int64).reshape(K // per, per, N)
    acc = torch.zeros(K // per, N, dtype=torch.int64, device=values.device)
    for i in range(per):
        acc |= v[:, i] << (bits * i)
    return _to_int32(acc)


def gptq_pack_cols(values: torch.Tensor, bits: int) -> torch.Tensor:
    """Inverse of gptq_unpack_cols: int [G, N] -> int32 [G, N*bits/32]."""
    return gptq_pack_rows(values.t(), bits).t().contiguous()


def gptq_v1_to_v2_zeros(qzeros: torch.Tensor, bits: int) -> torch.Tensor:
    """A v1 checkpoint stores zero - 1 (modulo 2^bits): add the 1 back, per packed value."""
    z = (gptq_unpack_cols(qzeros, bits) + 1) & ((1 << bits) - 1)
    return gptq_pack_cols(z, bits)


def gptq_dequantize(qweight, qzeros, scales, g_idx, bits: int) -> torch.Tensor:
    """Dense weight [K, N] in scales' dtype: (q[k, n] - z[g_idx[k], n]) * s[g_idx[k], n]."""
    q = gptq_unpack_rows(qweight, bits)
    g = g_idx.long()
    z = gptq_unpack_cols(qzeros, bits)[g]
    return (q - z).to(scales.dtype) * scales[g]


def gptq_linear(x, qweight, qzeros, scales, g_idx, bits: int, bias=None):
    """y = x @ W + bias, W stored GPTQ-style (true zeros, see the module docstring).

    x: [T, K] fp16/bf16 (float32 accepted); qweight int32 [K*bits/32, N]; qzeros int32
    [G, N*bits/32]; scales [G, N] in x's dtype; g_idx int32 [K]; bits 4 or 8; bias [N] or
    None.  Returns [T, N] in x's dtype.
    """
    w = gptq_dequantize(qweight, qzeros, scales, g_idx, bits)
    y = x.float() @ w.float()
    if bias is not None:
        y = y + bias.float()
    return y.to(x.dtype)
