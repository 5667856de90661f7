"""Quantizing a tiny checkpoint's linear layers into the formats the loader reads:
AWQ (4-bit, GEMM packing, zero points, groups along K) and W8A8 (int8 weights with
a float32 scale per output channel).  Written from the formats' definitions in
halinfer/core/ops/quant.py, for tests only."""
from __future__ import annotations

import json
import os
import shutil

import torch
from safetensors.torch import load_file, save_file

from halinfer.core.ops.quant import awq_pack

PROJ = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def _awq(w: torch.Tensor, group: int):
    wt = w.float().t()                                       # [K, N]
    K, N = wt.shape
    g = wt.view(K // group, group, N)
    lo, hi = g.amin(1), g.amax(1)
    scale = ((hi - lo) / 15).clamp(min=1e-6)
    zero = torch.round(-lo / scale).clamp(0, 15)
    q = torch.round(g / scale[:, None] + zero[:, None]).clamp(0, 15).view(K, N)
    return awq_pack(q.long()), awq_pack(zero.long()), scale.to(w.dtype)


def quantize(src: str, dst: str, method: str, group: int = 32) -> str:
    shutil.copytree(src, dst)
    for f in os.listdir(dst):
        if not f.endswith(".safetensors"):
            continue
        sd, out = load_file(os.path.join(dst, f)), {}
        for name, t in sd.items():
            base, _, leaf = name.rpartition(".")
            if leaf != "weight" or base.rpartition(".")[2] not in PROJ:
                out[name] = t
            elif method == "awq":
                out[f"{base}.qweight"], out[f"{base}.qzeros"], out[f"{base}.scales"] = _awq(t, group)
            else:
                s = t.float().abs().amax(1).clamp(min=1e-8) / 127
                out[name] = torch.round(t.float() / s[:, None]).clamp(-127, 127).to(torch.int8)
                out[f"{base}.weight_scale"] = s
        save_file(out, os.path.join(dst, f))
    with open(os.path.join(dst, "config.json")) as fh:
        cfg = json.load(fh)
    cfg["quantization_config"] = ({"quant_method": "awq", "bits": 4, "group_size": group, "version": "gemm",
                                   "zero_point": True} if method == "awq" else {"quant_method": "w8a8"})
    with open(os.path.join(dst, "config.json"), "w") as fh:
        json.dump(cfg, fh)
    return dst
