"""``halinfer quantize``'s body: load, calibrate layer by layer, write."""
from __future__ import annotations

import os
import sys
import tempfile

import torch

from . import capture
from .awq import AWQ
from .calibration import load_text, make_samples
from .fp8 import FP8
from .gptq import GPTQ
from .smoothquant import W8A8
from .writer import write_checkpoint

METHODS = {"awq": AWQ, "gptq": GPTQ, "w8a8": W8A8, "fp8": FP8}


def _check_shapes(model, method: str, group: int) -> None:
    """AWQ/GPTQ pack 8 (or 4) values per int32 and group inputs; say which module does not fit."""
    if method not in ("awq", "gptq"):
        return
    if group < 8:
        raise ValueError(f"--group-size {group} is too small; use a multiple of 8 such as 32, 64 or 128")
    for i, layer in enumerate(model.model.layers):
        for n in capture.LINEARS:
            m = layer.get_submodule(n)
            if m.in_features % group or m.out_features % 8:
                raise ValueError(f"layer {i} {n}: [{m.out_features}, {m.in_features}] cannot be quantized with "
                                 f"{method} at group size {group} (in_features must be a multiple of the group "
                                 f"size and out_features of 8)")


def quantize_checkpoint(model_dir: str, method: str, out_dir: str, calib_file: str | None = None,
                        device: str = "cpu", group_size: int = 128, bits: int = 4, num_samples: int = 16,
                        seq_len: int = 256, batch: int = 4, progress: bool = True, sym: bool = True,
                        act_order: bool = False) -> str:
    if method not in METHODS:
        raise ValueError(f"unknown quantization method {method!r}; supported: {', '.join(METHODS)}")
    if os.path.isdir(out_dir) and os.listdir(out_dir):
        raise FileExistsError(f"output directory {out_dir!r} exists and is not empty; choose a new one")
    if os.path.isfile(model_dir) and model_dir.endswith(".gguf"):
        from .source import gguf_to_hf_dir

        with tempfile.TemporaryDirectory() as tmp:
            print(f"converting {model_dir} to a float32 Hugging Face directory ...", file=sys.stderr)
            src = gguf_to_hf_dir(model_dir, tmp)
            return quantize_checkpoint(src, method, out_dir, calib_file, device, group_size, bits, num_samples,
                                       seq_len, batch, progress, sym, act_order)
    cfg = capture.read_config(model_dir)
    dev = capture.pick_device(device)
    qm = METHODS[method](group_size=group_size, bits=bits, sym=sym, act_order=act_order)
    text = load_text(calib_file) if qm.needs_calibration else None
    model = capture.load_float_model(model_dir)
    _check_shapes(model, method, group_size)
    layers = model.model.layers
    if qm.needs_calibration:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(model_dir)
        samples = make_samples(tok, text, num_samples, seq_len)
        hidden, kwargs = capture.first_layer_inputs(model, samples)
    quantized = {}
    bar = capture.progress(len(layers), f"quantize {method}") if progress else None
    for i, layer in enumerate(layers):
        layer.to(dev)
        if qm.needs_calibration:
            inputs = capture.capture_inputs(layer, hidden, kwargs, batch, dev)
            parts = qm.quantize_layer(layer, inputs)
            del inputs
            hidden = capture.run_layer(layer, hidden, kwargs, batch, dev)  # the next layer sees this one quantized
        else:
            parts = qm.quantize_layer(layer)
        layer.to("cpu")
        quantized.update({f"model.layers.{i}.{n}": {k: v.cpu() for k, v in p.items()} for n, p in parts.items()})
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return write_checkpoint(out_dir, model_dir, cfg, model, quantized, qm.config())
