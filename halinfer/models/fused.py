"""Splitting a checkpoint's fused matrix (q|k|v, gate|up) into its logical parts.

Several layouts store matrices that our merged layers load separately: Phi-3's
qkv_proj and gate_up_proj, GLM's gate_up_proj, Baichuan's W_pack, Qwen (v1)'s c_attn,
ChatGLM's query_key_value and dense_h_to_4h, InternLM2's wqkv (interleaved per KV head:
internlm2.py).  Every quantized format stores a tensor of such a matrix in one of three ways,
told apart by name and shape:
  * along the output rows, maybe packed: weight / bias / weight_scale [N(, ...)] (dim 0),
    pack-quantized's weight_packed [N, ...] and weight_zero_point [N/8, G]; AWQ's and GPTQ's
    qweight / qzeros / scales keep N in dim 1 (AWQ qweight [K, N/8], GPTQ qweight [K/8, N],
    qzeros [G, N*b/32]);
  * in blocks of rows: block-FP8's weight_scale(_inv) [ceil(N/bn), ceil(K/bk)].  A part may
    start inside a block, so those become one scale row per output row (the form
    Fp8Method holds them in) before splitting;
  * once for the whole matrix: GPTQ's g_idx and pack-quantized's weight_g_idx (one input
    permutation), a per-tensor scale, a static input_scale; every part gets the tensor, and
    pack-quantized's weight_shape [N, K] becomes each part's [n, K].
"""
from __future__ import annotations

from typing import Callable

import torch

_WHOLE = ("g_idx", "weight_g_idx", "input_scale")
_DIM1 = ("qweight", "qzeros", "scales")


def output_rows(param_name: str, t: torch.Tensor, total: int, quant: dict | None):
    """(tensor, output dim, output rows per stored element) of a fused Linear's tensor with
    ``total`` output rows, block scales expanded to one row each; None when the tensor is the
    same for every part."""
    if param_name in _WHOLE or (t.numel() == 1 and total > 1):
        return None
    dim = 1 if param_name in _DIM1 and t.dim() == 2 else 0
    n = t.shape[dim]
    block = (quant or {}).get("block")
    if block and param_name in ("weight_scale", "weight_scale_inv") and t.dim() == 2 and n != total \
            and n == -(-total // block[0]):
        t, n = t.repeat_interleave(block[0], dim=0)[:total], total
    pack = total // n if n else 0
    if pack not in (1, 2, 4, 8) or n * pack != total:
        raise ValueError(f"fused tensor {param_name!r} has {n} output rows along dim {dim}; expected {total} "
                         f"(or that many / 2, 4 or 8 packed)")
    return t, dim, pack


def split_rows(param_name: str, t: torch.Tensor, sizes: list[int], quant: dict | None,
               split: Callable[[torch.Tensor, int, int], list[torch.Tensor]]) -> list[torch.Tensor]:
    """The parts of ``t`` (output widths ``sizes``), cut by ``split(t, dim, pack)`` where
    the tensor runs along the output rows."""
    if param_name == "weight_shape":      # pack-quantized: [N, K] of the fused matrix
        return [torch.tensor([s, int(t.reshape(-1)[1])], dtype=t.dtype) for s in sizes]
    rows = output_rows(param_name, t, sum(sizes), quant)
    if rows is None:
        return [t] * len(sizes)
    t, dim, pack = rows
    assert all(s % pack == 0 for s in sizes), f"part widths {sizes} do not divide into packs of {pack}"
    return [p.contiguous() for p in split(t, dim, pack)]


def split_fused(param_name: str, t: torch.Tensor, sizes: list[int], quant: dict | None = None) -> list[torch.Tensor]:
    """Split tensor ``t`` of a fused Linear (parameter ``param_name``) into parts whose
    output widths are ``sizes`` (logical output rows, contiguous); ``quant``: the model's
    quantization spec (ModelContext.quant), for block scales' block height."""
    return split_rows(param_name, t, sizes, quant,
                      lambda x, dim, pack: torch.split(x, [s // pack for s in sizes], dim=dim))


def split_names(name: str, fused: str, parts: list[str]) -> tuple[str, list[str]]:
    """'x.<fused>.weight' -> ('weight', ['x.<part>.weight', ...])."""
    prefix, _, pname = name.rpartition(".")
    base = prefix[: -len(fused)]
    return pname, [f"{base}{p}.{pname}" for p in parts]
