"""Independent readers of the written layouts, from the published layout facts (not from
halinfer/core/ops): each value is taken out of its int32 word one at a time with numpy.

  AutoAWQ GEMM  qweight int32 [K, N/8]: nibble i (bits 4i..4i+3) of word [k, c] is the
                weight of input k, output 8c + (0, 2, 4, 6, 1, 3, 5, 7)[i]; qzeros [K/g, N/8]
                the same along outputs; scales float16 [K/g, N]; W[n, k] = (q - z) * s.
  GPTQ v1       qweight int32 [K*b/32, N]: value i of word [r, n] is input (32/b) r + i;
                qzeros int32 [G, N*b/32]: value i of word [g, c] is output (32/b) c + i and
                holds zero - 1 (mod 2^b); scales float16 [G, N]; g_idx [K].
  W8A8          weight int8 [N, K] * weight_scale [N, 1].
  FP8 block     weight e4m3 [N, K] * weight_scale_inv [ceil(N/128), ceil(K/128)] per block.
"""
from __future__ import annotations

import numpy as np
import torch

AWQ_NIBBLE_TO_COLUMN = (0, 2, 4, 6, 1, 3, 5, 7)


def _u32(t: torch.Tensor) -> np.ndarray:
    return t.numpy().astype(np.int64) & 0xFFFFFFFF


def awq_unpack(packed: torch.Tensor) -> np.ndarray:
    w = _u32(packed)
    R, C = w.shape
    out = np.zeros((R, C * 8), dtype=np.int64)
    for i in range(8):
        out[:, np.arange(C) * 8 + AWQ_NIBBLE_TO_COLUMN[i]] = (w >> (4 * i)) & 0xF
    return out


def awq_dense(t: dict, group: int) -> torch.Tensor:
    q, z = awq_unpack(t["qweight"]), awq_unpack(t["qzeros"])
    s = t["scales"].float().numpy()
    k = np.arange(q.shape[0]) // group
    return torch.from_numpy(((q - z[k]) * s[k]).T.astype(np.float32))  # [N, K]


def gptq_unpack_rows(packed: torch.Tensor, bits: int) -> np.ndarray:
    w = _u32(packed)
    per, mask = 32 // bits, (1 << bits) - 1
    out = np.zeros((w.shape[0] * per, w.shape[1]), dtype=np.int64)
    for i in range(per):
        out[np.arange(w.shape[0]) * per + i] = (w >> (bits * i)) & mask
    return out


def gptq_dense(t: dict, bits: int) -> torch.Tensor:
    q = gptq_unpack_rows(t["qweight"], bits)                       # [K, N]
    z = (gptq_unpack_rows(t["qzeros"].t().contiguous(), bits).T + 1) & ((1 << bits) - 1)  # v1: stored zero - 1
    s = t["scales"].float().numpy()
    g = t["g_idx"].numpy().astype(np.int64)
    return torch.from_numpy(((q - z[g]) * s[g]).T.astype(np.float32))


def w8a8_dense(t: dict) -> torch.Tensor:
    return t["weight"].float() * t["weight_scale"].float().reshape(-1, 1)


def fp8_dense(t: dict, block=(128, 128)) -> torch.Tensor:
    w, s = t["weight"].float(), t["weight_scale_inv"].float()
    rows = torch.arange(w.shape[0]) // block[0]
    cols = torch.arange(w.shape[1]) // block[1]
    return w * s[rows][:, cols]


def dense_of(parts: dict, cfg: dict) -> torch.Tensor:
    qc = cfg["quantization_config"]
    if qc["quant_method"] == "awq":
        return awq_dense(parts, qc["group_size"])
    if qc["quant_method"] == "gptq":
        return gptq_dense(parts, qc["bits"])
    if qc["quant_method"] == "compressed-tensors":
        return w8a8_dense(parts)
    return fp8_dense(parts, tuple(qc["weight_block_size"]))
