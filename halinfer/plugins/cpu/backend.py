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
    kv_cache_dtypes = ("auto", "int8")
    dtypes = (torch.float32, torch.bfloat16, torch.float16)
    weight_quant = ("awq", "w8a8")
    graph_modes = ("eager",)

    def available(self):
        return True, "ok"

    def support(self):
        from halinfer.support.declare import implemented_rows

        # int8 KV runs through the reference store/attention; W4A16/W8A8 ops exist but
        # no model test backs them per family yet, so they are not claimed.
        return implemented_rows({"FP16/BF16": True, "KV INT8": True, "KV INT4": False, "W8A8": False,
                                 "W4A16": False})

    @functools.cached_property
    def ops(self):
        from .ops import CpuOps

        return CpuOps()

    def device_count(self):
        return 1
