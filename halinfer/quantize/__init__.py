"""``halinfer quantize``: post-training quantization of Llama-style checkpoints into the
formats halinfer (and other engines) load: AWQ and GPTQ (4-bit weights), W8A8 (SmoothQuant
+ int8, compressed-tensors) and FP8 (block-scaled e4m3).  docs/quantization.md describes
each method and its output."""


def __getattr__(name):  # lazy: `halinfer --help` should not import torch for this
    if name in ("METHODS", "quantize_checkpoint"):
        from . import run

        return getattr(run, name)
    raise AttributeError(name)
