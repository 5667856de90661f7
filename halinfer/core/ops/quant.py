"""Quantized GEMM references: W4A16 in AWQ packing, W8A8 int8 with per-token activations."""
from __future__ import annotations

import torch

# AWQ's GEMM packing puts output column ``8*c + AWQ_ORDER[i]`` into nibble i
# (bits 4i..4i+3) of packed column c.
AWQ_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)


def awq_unpack(packed: torch.Tensor) -> torch.Tensor:
    """int32 [R, N/8] -> int32 [R, N] of values 0..15, in output-column order."""
    shifts = torch.arange(0, 32, 4, device=packed.device, dtype=torch.int32)
    nib = (packed[:, :, None] >> shifts) & 0xF                       # [R, N/8, 8] nibble-major
    order = torch.tensor(AWQ_ORDER, device=packed.device)
    out = torch.empty_like(nib)
    out[:, :, order] = nib                                            # nibble i -> column order[i]
    return out.reshape(packed.shape[0], -1)


def awq_pack(values: torch.Tensor) -> torch.Tensor:
    """Inverse of awq_unpack: int [R, N] of 0..15 -> int32 [R, N/8]."""
    R, N = values.shape
    v = values.to(torch.int64).reshape(R, N // 8, 8)[:, :, list(AWQ_ORDER)]
    acc = torch.zeros(R, N // 8, dtype=torch.int64, device=values.device)
    for i in range(8):
        acc |= v[:, :, i] << (4 * i)
    acc = torch.where(acc >= (1 << 31), acc - (1 << 32), acc)  # two's complement into int32
    return acc.to(torch.int32)


def awq_dequantize(qweight, scales, qzeros, group_size: int) -> torch.Tensor:
    """Dense weight [K, N] (scales' dtype): ``(q - z) * s`` per group of ``group_size`` rows."""
    w = awq_unpack(qweight)                                           # [K, N]
    z = awq_unpack(qzeros)                                            # [K/g, N]
    z = z.repeat_interleave(group_size, dim=0)[: w.shape[0]]
    s = scales.repeat_interleave(group_size, dim=0)[: w.shape[0]]
    return ((w - z).to(scales.dtype)) * s


def w4a16_linear(x, qweight, scales, qzeros, group_size: int, bias=None):
    """y = x @ W + bias, W stored AWQ-style.

    x: [T, K] fp16/bf16; qweight int32 [K, N/8]; qzeros int32 [K/g, N/8];
    scales [K/g, N] in x's dtype; bias [N] or None.  Returns [T, N] in x's dtype.
    """
    w = awq_dequantize(qweight, scales, qzeros, group_size)
    y = x.float() @ w.float()
    if bias is not None:
        y = y + bias.float()
    return y.to(x.dtype)


def quant_per_token_int8(x: torch.Tensor):
    """Dynamic symmetric int8 per row: scale = max|x_row| / 127 (float32 [T]), q = round(x/scale)."""
    scale = x.float().abs().amax(-1).clamp(min=1e-8) / 127.0
    q = torch.round(x.float() / scale[:, None]).clamp(-128, 127).to(torch.int8)
    return q, scale


def w8a8_linear(x, weight, weight_scale, bias=None):
    """y = (q(x) @ W^T) * x_scale[:, None] * weight_scale[None, :] + bias.

    x: [T, K] fp16/bf16 (quantized per token inside); weight int8 [N, K];
    weight_scale float32 [N]; bias [N] or None.  Returns [T, N] in x's dtype.
    The integer product is exact (float64 accumulation here).
    """
    xq, xs = quant_per_token_int8(x)
    return w8a8_product(xq, xs, weight, weight_scale, bias, x.dtype)


def w8a8_product(xq, xs, weight, weight_scale, bias, out_dtype):
    """w8a8_linear after its activation quantization: int8 xq [T, K], float32 xs [T]."""
    acc = xq.double() @ weight.double().t()
    y = acc * xs.double()[:, None] * weight_scale.double()[None, :]
    if bias is not None:
        y = y + bias.double()
    return y.to(out_dtype)
