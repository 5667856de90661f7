"""The way back from a converted checkpoint (testing/convert.py: a family transformers lacks,
laid out as its remote code publishes it) to the transformers checkpoint it came from.

A quantized test writes the converted checkpoint's quantized twin and its dequantized dense
twin (quant_ckpt.quantize); transformers can only run the dense twin in the reference's
layout.  Every converter moves projection values without arithmetic (renames, row
concatenations, per-head interleavings), so the map is found rather than written per family:
the reference's projection weights are replaced by their own element indices, the converter
runs on that, and each converted element then names the reference element it came from.
"""
from __future__ import annotations

import os
import shutil
import tempfile

import torch
from safetensors.torch import load_file, save_file

from .quant_ckpt import LINEARS


def _projection(name: str) -> bool:
    base, _, leaf = name.rpartition(".")
    return leaf == "weight" and base.rpartition(".")[2] in LINEARS


def reference_twin(converter, reference_dir: str, converted_dir: str, twin_dir: str, out_dir: str) -> str:
    """out_dir: reference_dir with every element that ``twin_dir`` (a dense twin of the
    checkpoint that ``converter(reference_dir)`` wrote to converted_dir) changed put back where
    the converter took it from.  Elements the twin left equal keep the reference's value, so a
    converter's own rescaling (Baichuan 2's head rows) never reaches the reference."""
    ref_file = os.path.join(reference_dir, "model.safetensors")
    ref = load_file(ref_file)
    names = sorted(n for n in ref if _projection(n))
    offsets, ids, total = {}, dict(ref), 0
    for n in names:
        offsets[n] = total
        # float64 holds every index exactly; a converter only concatenates and views
        ids[n] = torch.arange(total, total + ref[n].numel(), dtype=torch.float64).view(ref[n].shape)
        total += ref[n].numel()
    flat = torch.cat([ref[n].flatten().double() for n in names]) if names else torch.zeros(0, dtype=torch.float64)
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "ids")
        shutil.copytree(reference_dir, src)
        save_file(ids, os.path.join(src, "model.safetensors"))
        mapped = load_file(os.path.join(converter(src, os.path.join(tmp, "conv")), "model.safetensors"))
    converted = load_file(os.path.join(converted_dir, "model.safetensors"))
    twin = load_file(os.path.join(twin_dir, "model.safetensors"))
    for n, t in twin.items():
        changed = t != converted[n]
        if not bool(changed.any()):
            continue
        where = mapped[n][changed]
        if where.dtype != torch.float64 or not bool((where == where.round()).all()):
            raise ValueError(f"{n}: the converter does not only move reference elements here; no way back")
        flat[where.long()] = t[changed].double()
    out = dict(ref)
    for n in names:
        a = offsets[n]
        out[n] = flat[a:a + ref[n].numel()].view(ref[n].shape).to(ref[n].dtype)
    shutil.copytree(reference_dir, out_dir)
    save_file({k: v.contiguous() for k, v in out.items()}, os.path.join(out_dir, "model.safetensors"))
    return out_dir
