"""Quantized KV caches: how a (token, head) vector is stored and read back.

  int8  symmetric: q = round(x / s), s = amax / 127; value = q * s
  fp8   float8_e4m3fn, per-(token, head) scale s = amax / 448; value = q * s
  int4  asymmetric (as LMDeploy's quant_policy=4): s = (max - min) / 15, z = min,
        q = round((x - z) / s) in 0..15; value = q * s + z.  Two values per byte along
        the head dim: channel 2i in the low nibble of byte i, 2i+1 in the high nibble.
Scales (and int4 zeros) are float32, one per (token, head): the shapes of LayerKV's
k_scale / k_zero.  A dynamic per-(token, head) fp8 scale is more accurate than a single
per-tensor one, and it reads the same way as int8 in every kernel.
"""
from __future__ import annotations

import torch

KV_QUANT_MODES = ("int8", "fp8", "int4")


def kv_storage_dtype(mode: str | None, model_dtype: torch.dtype) -> torch.dtype:
    return {None: model_dtype, "int8": torch.int8, "fp8": torch.float8_e4m3fn, "int4": torch.uint8}[mode]


def kv_stored_dim(mode: str | None, head_dim: int) -> int:
    """Elements per (token, head) in the cache: int4 packs two channels per byte."""
    if mode == "int4":
        assert head_dim % 2 == 0, f"an int4 KV cache needs an even head dim, got {head_dim}"
        return head_dim // 2
    return head_dim


def quantize_kv(x: torch.Tensor, mode: str):
    """x [..., D] -> (stored [..., D'] , scale float32 [...], zero float32 [...] or None)."""
    xf = x.float()
    if mode == "int8":
        s = xf.abs().amax(-1).clamp(min=1e-8) / 127.0
        return torch.round(xf / s[..., None]).clamp(-128, 127).to(torch.int8), s, None
    if mode == "fp8":
        s = xf.abs().amax(-1).clamp(min=1e-8) / 448.0
        return (xf / s[..., None]).clamp(-448.0, 448.0).to(torch.float8_e4m3fn), s, None
    if mode == "int4":
        lo, hi = xf.amin(-1), xf.amax(-1)
        s = ((hi - lo) / 15.0).clamp(min=1e-8)
        q = torch.round((xf - lo[..., None]) / s[..., None]).clamp(0, 15).to(torch.uint8)
        packed = q[..., 0::2] | (q[..., 1::2] << 4)
        return packed, s, lo
    raise ValueError(f"unknown KV cache quantization {mode!r}; known: {', '.join(KV_QUANT_MODES)}")


def dequantize_kv(stored: torch.Tensor, scale, zero, mode: str | None) -> torch.Tensor:
    """Inverse of quantize_kv, as float32 [..., D] (scale/zero broadcast over the last dim)."""
    if mode is None:
        return stored.float()
    if mode == "int4":
        lo = (stored & 0xF).float()
        hi = (stored >> 4).float()
        q = torch.stack((lo, hi), dim=-1).flatten(-2)
        return q * scale[..., None] + zero[..., None]
    return stored.float() * scale[..., None]
