"""Start-up choices that depend only on the backend and the model's config, each with its error."""
from __future__ import annotations

import logging

import torch

from .backend import Backend
from .config import ModelConfig, parse_dtype

log = logging.getLogger("halinfer")

_QUANT_ALIASES = {"awq": "awq", "w4a16": "awq", "w8a8": "w8a8", "smooth_quant": "w8a8"}


def pick_dtype(b: Backend, dtype, mc: ModelConfig) -> torch.dtype:
    b = b
    accepted = ", ".join(str(d).replace("torch.", "") for d in b.dtypes)
    if dtype in (None, "auto"):
        want = mc.torch_dtype
        if want in b.dtypes:
            return want
        for alt in (torch.bfloat16, torch.float16, torch.float32):
            if alt in b.dtypes:
                log.warning("%s does not support %s; using %s", b.name, want, alt)
                return alt
    d = parse_dtype(dtype)
    if d not in b.dtypes:
        raise ValueError(f"dtype {dtype!r} is not supported on {b.name}; accepted: auto, {accepted}")
    return d

def pick_quant(b: Backend, quantization, mc: ModelConfig) -> dict | None:
    qc = mc.get("quantization_config") or {}
    ckpt = _QUANT_ALIASES.get(str(qc.get("quant_method", "")).lower()) if qc else None
    if qc and ckpt is None:
        raise ValueError(f"checkpoint quantization {qc.get('quant_method')!r} is not supported; supported: "
                         "awq (W4A16), w8a8")
    want = _QUANT_ALIASES.get(str(quantization).lower()) if quantization else None
    if quantization and want is None:
        raise ValueError(f"quantization={quantization!r} is not supported; accepted: None, awq, w8a8")
    if want and ckpt and want != ckpt:
        raise ValueError(f"quantization={quantization!r} but the checkpoint is quantized with {ckpt!r}")
    if want and not ckpt:
        raise ValueError(f"quantization={quantization!r} needs a checkpoint quantized that way; "
                         f"{mc.path!r} holds unquantized weights")
    method = ckpt
    if method is None:
        return None
    if method not in b.weight_quant:
        raise ValueError(f"{method} quantization is not supported on {b.name}; this backend supports: "
                         f"{', '.join(b.weight_quant) or 'no weight quantization'}")
    if method == "awq":
        if qc.get("bits", 4) != 4 or str(qc.get("version", "gemm")).lower() != "gemm":
            raise ValueError("only 4-bit AWQ in GEMM packing is supported")
        return {"method": "awq", "group_size": int(qc.get("group_size", 128))}
    return {"method": "w8a8"}

def pick_max_len(requested, mc: ModelConfig) -> int:
    limit = mc.max_position
    _, rtype, rp = mc.rope_params()
    if rtype in ("linear", "dynamic") and rp.get("factor"):
        limit = int(limit * float(rp["factor"]))  # these scalings exist to stretch the context
    if requested is None:
        return limit
    if requested > limit:
        raise ValueError(f"max_model_len={requested} exceeds the model's context of {limit} tokens "
                         "(max_position_embeddings, times the rope scaling factor where it stretches the context)")
    return int(requested)

def pick_block_size(b: Backend, requested) -> int:
    b = b
    if requested is None:
        return b.default_block_size
    if requested not in b.block_sizes:
        raise ValueError(f"block_size={requested} is not supported on {b.name}; accepted: "
                         f"{', '.join(map(str, b.block_sizes))}")
    return int(requested)


def check_kv_cache_dtype(b: Backend, kv_cache_dtype: str) -> None:
    if kv_cache_dtype != "auto" and kv_cache_dtype not in b.kv_cache_dtypes:
        raise ValueError(f"kv_cache_dtype={kv_cache_dtype!r} is not supported on {b.name}; "
                         f"accepted: {', '.join(b.kv_cache_dtypes)}")
