"""Reading a checkpoint's ``quantization_config`` into the spec the model's linears use.

The spec is a plain dict with ``method`` one of:
  awq   AutoAWQ GEMM packing, 4-bit                     {"group_size"}
  gptq  GPTQ / GPTQModel, 4 or 8 bits, v1 or v2 zeros   {"bits", "group_size", "desc_act", "sym", "format"};
        also compressed-tensors "pack-quantized" (llm-compressor's W4A16 / W8A16: format
        "pack-quantized", whose tensors the linear re-lays into GPTQ's on load)
  w8a8  int8 weights per output channel, int8 activations per token, dynamic
        (compressed-tensors "int-quantized", LMDeploy smooth_quant)
  fp8   float8_e4m3fn weights; {"block": [bn, bk] or None (per channel / tensor),
        "static_input": bool (a per-tensor input_scale in the checkpoint)}
Modules a checkpoint leaves unquantized (modules_to_not_convert, ignore) need no list
here: their tensors arrive as a dense ``weight`` and the linear loads them dense.
Every refusal names the variant and lists what is supported.
"""
from __future__ import annotations

import json
import os

SUPPORTED = ("awq (4-bit GEMM), gptq (4/8-bit, v1/v2, desc_act), compressed-tensors pack-quantized W4A16 / "
             "W8A16 (int weights in groups or channels, symmetric or not, actorder), compressed-tensors int-quantized W8A8 "
             "(int8 channel/tensor weights, dynamic per-token int8 activations), compressed-tensors "
             "float-quantized FP8 (channel/tensor/block weights, dynamic or static per-tensor activations), "
             "fp8 block-scaled (weight_block_size), w8a8 / smooth_quant (LMDeploy)")

# what a user may pass as quantization=..., and the method it means
ALIASES = {"awq": "awq", "w4a16": None, "gptq": "gptq", "w8a8": "w8a8", "smooth_quant": "w8a8",
           "compressed-tensors": None, "fp8": "fp8"}


class UnsupportedQuantization(ValueError):
    pass


def _refuse(what: str):
    raise UnsupportedQuantization(f"checkpoint quantization {what} is not supported; supported: {SUPPORTED}")


def read_quant_config(config: dict, model_dir: str | None) -> dict | None:
    """config.json's quantization_config, or a GPTQ quantize_config.json beside it."""
    qc = config.get("quantization_config")
    if qc:
        return dict(qc)
    if model_dir:
        p = os.path.join(model_dir, "quantize_config.json")
        if os.path.isfile(p):
            with open(p) as f:
                q = json.load(f)
            q.setdefault("quant_method", "gptq")
            return q
    return None


def parse_quant_config(qc: dict | None) -> dict | None:
    if not qc:
        return None
    method = str(qc.get("quant_method", "")).lower()
    if method == "awq":
        return _awq(qc)
    if method == "gptq":
        return _gptq(qc)
    if method == "fp8":
        return _fp8_block(qc)
    if method == "compressed-tensors":
        return _compressed_tensors(qc)
    if method in ("w8a8", "smooth_quant"):
        dt = str(qc.get("quant_dtype", "int8")).lower()
        if dt not in ("int8", "torch.int8"):
            _refuse(f"{method} with quant_dtype={dt!r}")
        return {"method": "w8a8", "format": method}
    _refuse(repr(qc.get("quant_method")))


def _awq(qc):
    bits, version = qc.get("bits", qc.get("w_bit", 4)), str(qc.get("version", "gemm")).lower()
    if bits != 4 or version != "gemm" or not qc.get("zero_point", True):
        _refuse(f"awq bits={bits} version={version!r} zero_point={qc.get('zero_point', True)}")
    return {"method": "awq", "group_size": int(qc.get("group_size", qc.get("q_group_size", 128)))}


def _gptq(qc):
    bits = int(qc.get("bits", 4))
    fmt = str(qc.get("checkpoint_format", qc.get("format", "gptq"))).lower()
    if bits not in (4, 8):
        _refuse(f"gptq bits={bits}")
    if fmt not in ("gptq", "gptq_v2"):
        _refuse(f"gptq checkpoint_format={fmt!r} (gptq and gptq_v2 are read)")
    return {"method": "gptq", "bits": bits, "group_size": int(qc.get("group_size", 128)),
            "desc_act": bool(qc.get("desc_act", False)), "sym": bool(qc.get("sym", True)),
            "format": "v2" if fmt == "gptq_v2" else "v1"}


def _fp8_block(qc):
    fmt = str(qc.get("fmt", "e4m3")).lower()
    act = str(qc.get("activation_scheme", "dynamic")).lower()
    block = qc.get("weight_block_size")
    if fmt != "e4m3":
        _refuse(f"fp8 fmt={fmt!r}")
    if act != "dynamic":
        _refuse(f"fp8 activation_scheme={act!r} (dynamic is read)")
    if block is not None and len(block) != 2:
        _refuse(f"fp8 weight_block_size={block!r}")
    return {"method": "fp8", "block": list(map(int, block)) if block else None, "static_input": False}


def _ct_scheme(group: dict) -> tuple:
    w, a = group.get("weights") or {}, group.get("input_activations") or {}
    return (w.get("num_bits"), w.get("type"), w.get("symmetric", True), w.get("strategy"),
            tuple(w.get("block_structure") or ()), a.get("num_bits"), a.get("type"), a.get("symmetric", True),
            a.get("strategy"), a.get("dynamic"), w.get("group_size"), w.get("actorder"))


def _compressed_tensors(qc):
    groups = list((qc.get("config_groups") or {}).values())
    if not groups:
        _refuse("compressed-tensors without config_groups")
    schemes = {_ct_scheme(g) for g in groups}
    if len(schemes) > 1:
        _refuse(f"compressed-tensors with {len(schemes)} different schemes in config_groups")
    fmt = str(groups[0].get("format") or qc.get("format", "")).lower()
    wb, wt, wsym, wstrat, wblock, ab, at, asym, astrat, adyn, wgroup, actorder = schemes.pop()
    desc = (f"compressed-tensors format={fmt!r} weights={wb}-bit {wt} {wstrat} "
            f"activations={'none' if ab is None else f'{ab}-bit {at} {astrat} dynamic={adyn}'}")
    if fmt == "pack-quantized" and ab is None and wt == "int" and wb in (4, 8) and wstrat in ("group", "channel"):
        # weight-only ints: GPTQ's op with true zeros; actorder "group" ships weight_g_idx
        # ("weight" reorders only while quantizing: the groups stay plain runs)
        return {"method": "gptq", "bits": int(wb), "group_size": int(wgroup) if wstrat == "group" else -1,
                "desc_act": actorder == "group", "sym": bool(wsym), "format": "pack-quantized"}
    if ab is None or not wsym or not asym:
        _refuse(desc + (" (weight-only)" if ab is None else " (asymmetric)"))
    if fmt == "int-quantized" and (wb, wt, ab, at) == (8, "int", 8, "int"):
        if wstrat in ("channel", "tensor") and astrat == "token" and adyn is True:
            return {"method": "w8a8", "format": "compressed-tensors"}
    if fmt == "float-quantized" and (wb, wt, ab, at) == (8, "float", 8, "float"):
        if wstrat in ("channel", "tensor") and astrat == "token" and adyn is True:
            return {"method": "fp8", "block": None, "static_input": False, "format": "compressed-tensors"}
        if wstrat in ("channel", "tensor") and astrat == "tensor" and adyn is False:
            return {"method": "fp8", "block": None, "static_input": True, "format": "compressed-tensors"}
        if wstrat == "block" and len(wblock) == 2 and astrat == "group" and adyn is True:
            return {"method": "fp8", "block": list(map(int, wblock)), "static_input": False,
                    "format": "compressed-tensors"}
    _refuse(desc)
