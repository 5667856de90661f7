"""Splitting a checkpoint's fused matrix (q|k|v, gate|up) into its logical parts.

Several layouts store matrices that our merged layers load separately: Phi-3's
qkv_proj and gate_up_proj, Baichuan's W_pack, Qwen (v1)'s c_attn, ChatGLM's
query_key_value and dense_h_to_4h.  Their parts are contiguous along the output
dimension, so one split serves all; the quantized formats keep the output
dimension elsewhere (AWQ: dim 1, packed 8 to an int32 for qweight / qzeros).
"""
from __future__ import annotations

import torch


def output_dim_and_packing(param_name: str) -> tuple[int, int]:
    """(the output dimension, output values per stored element) of a Linear tensor."""
    if param_name in ("qweight", "qzeros"):
        return 1, 8
    if param_name == "scales":
        return 1, 1
    return 0, 1                               # weight [N, K], bias [N], weight_scale [N(, 1)]


def split_fused(param_name: str, t: torch.Tensor, sizes: list[int]) -> list[torch.Tensor]:
    """Split tensor ``t`` of a fused Linear (parameter ``param_name``) into parts whose
    output widths are ``sizes`` (in logical output channels)."""
    dim, pack = output_dim_and_packing(param_name)
    if t.dim() == 1:
        dim = 0
    assert all(s % pack == 0 for s in sizes), f"part widths {sizes} do not divide into packs of {pack}"
    stored = [s // pack for s in sizes]
    if t.shape[dim] != sum(stored):
        raise ValueError(f"fused tensor {param_name!r} has {t.shape[dim]} output rows, expected {sum(stored)} "
                         f"(parts {sizes})")
    return [p.contiguous() for p in torch.split(t, stored, dim=dim)]


def split_names(name: str, fused: str, parts: list[str]) -> tuple[str, list[str]]:
    """'x.<fused>.weight' -> ('weight', ['x.<part>.weight', ...])."""
    prefix, _, pname = name.rpartition(".")
    base = prefix[: -len(fused)]
    return pname, [f"{base}{p}.{pname}" for p in parts]
