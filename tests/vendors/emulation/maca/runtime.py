"""The MACA runtime as the plugin sees it: MetaX's torch build is torch.cuda with MACA
markers (vendors/maca.md §1), CUDA graphs on top (§5).  Emulated by patching
torch.cuda's entry points the plugin calls, marking the build (USE_MACA), and
taping Triton kernel launches into emulated graphs (a CUDA graph records a
kernel launch with its pointers and scalar arguments; here, with its tensors
and frozen Python values)."""
from __future__ import annotations

import torch

from .. import graph_tape
from ..checks import device_ordinal
from ..graph_tape import GraphContext, TapeGraph, vendor_op


class CUDAGraph(TapeGraph):
    """torch.cuda.CUDAGraph on MACA (§5)."""


def cuda_attrs(cfg) -> list[tuple[object, str, object]]:
    c = torch.cuda
    return [
        (c, "is_available", lambda: cfg.device_count > 0),
        (c, "device_count", lambda: cfg.device_count),
        (c, "current_device", lambda: 0),
        (c, "set_device", lambda d: device_ordinal("torch.cuda.set_device", d)),
        (c, "synchronize", lambda device=None: None),
        (c, "get_device_name", lambda device=None: cfg.device_name),
        (c, "mem_get_info", lambda device=None: (cfg.free_bytes, cfg.total_bytes)),
        (c, "memory_allocated", lambda device=None: 0),
        (c, "max_memory_allocated", lambda device=None: 0),
        (c, "reset_peak_memory_stats", lambda device=None: None),
        (c, "empty_cache", lambda: None),
        (c, "CUDAGraph", CUDAGraph),
        (c, "graph", lambda g, pool=None, stream=None, capture_error_mode="global": GraphContext(
            g, pool=pool, stream=stream, capture_error_mode=capture_error_mode)),
        (c, "graph_pool_handle", lambda: ("cuda-pool", 0)),
    ]


def triton_launch_attr():
    """Replace the interpreter's launch so a launch inside a capture is taped as one step."""
    from triton.runtime.interpreter import InterpretedFunction

    original = InterpretedFunction.run

    def run(self, *args, grid, warmup, **kwargs):
        if graph_tape.capturing_graph() is None or warmup:
            return original(self, *args, grid=grid, warmup=warmup, **kwargs)
        launch = vendor_op(f"triton:{self.__name__}")(
            lambda *a, **kw: original(self, *a, grid=grid, warmup=warmup, **kw))
        return launch(*args, **kwargs)

    return (InterpretedFunction, "run", run)
