"""CPU backend: pure torch, eager only.  The reference every other backend is held to."""
from __future__ import annotations

import functools

import torch

from halinfer.core.backend import Backend

class CpuBackend(Backend):
    name = "cpu"
    description = "pure-torch reference backend"
    device_type = "cpu"
    priority = 0
    dist_backend = "gloo"
    kv_layout = "NHD"
    block_sizes = (1, 2, 4, 8, 16, 32, 64, 128, 256)
    default_block_size = 16
    kv_cache_dtypes = ("auto", "int8", "int4", "fp8")
    dtypes = (torch.float32, torch.bfloat16, torch.float16)
    weight_quant = ("awq", "gptq", "w8a8", "fp8")
    graph_modes = ("eager",)

    def available(self):
        return True, "ok"

    def support(self):
        from halinfer.support.declare import implemented_rows, quant_rows

        # KV INT8/INT4 run through the reference store/attention on every family; the
        # quantized GEMMs are claimed where every format loads (support/declare.py).
        return quant_rows(implemented_rows({"FP16/BF16": True, "KV INT8": True, "KV INT4": True}),
                          {"W8A8": True, "W4A16": True, "FP8": True})

    @functools.cached_property
    def ops(self):
        from .ops import CpuOps

        return CpuOps()

    def device_count(self):
        return 1
