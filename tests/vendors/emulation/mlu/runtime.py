"""``torch_mlu`` and its ``torch_mlu.mlu`` device module, emulated (vendors/camb.md §1, §8).

MLUGraph is graph_tape.TapeGraph: recorded at capture, re-run at replay with the
device buffers' current contents and the host values frozen at capture.
"""
from __future__ import annotations

import contextlib
import types
from types import SimpleNamespace

import torch

from ..checks import device_ordinal
from ..graph_tape import GraphContext, TapeGraph


class MLUGraph(TapeGraph):
    """§8: torch.mlu.MLUGraph."""


def build(cfg) -> types.ModuleType:
    m = types.ModuleType("torch_mlu")
    m.__version__ = cfg.torch_mlu_version
    state = {"device": 0, "stream": object()}

    @contextlib.contextmanager
    def stream(s):
        prev, state["stream"] = state["stream"], s
        try:
            yield
        finally:
            state["stream"] = prev

    m.mlu = SimpleNamespace(
        is_available=lambda: cfg.device_count > 0,
        device_count=lambda: cfg.device_count,
        current_device=lambda: state["device"],
        set_device=lambda d: state.__setitem__("device", device_ordinal("set_device", d)),
        synchronize=lambda device=None: None,
        get_device_name=lambda device=None: cfg.device_name,
        mem_get_info=lambda device=None: (cfg.free_bytes, cfg.total_bytes),
        memory_allocated=lambda device=None: 0,
        max_memory_allocated=lambda device=None: 0,
        memory_reserved=lambda device=None: 0,
        empty_cache=lambda: None,
        manual_seed=lambda s: torch.manual_seed(s),
        Stream=lambda *a, **k: object(),
        stream=stream,
        current_stream=lambda device=None: state["stream"],
        MLUGraph=MLUGraph,
        # §8: MLU capture defaults to the "relaxed" error mode
        graph=lambda g, pool=None, stream=None, capture_error_mode="relaxed": GraphContext(
            g, pool=pool, stream=stream, capture_error_mode=capture_error_mode),
        graph_pool_handle=lambda: ("mlu-pool", 0),
    )
    return m
