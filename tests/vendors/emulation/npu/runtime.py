"""``torch_npu.npu``: device queries, memory, streams, events and graphs, emulated.

Follows vendors/ascend.md §1 (device API, SoC queries) and §10 (NPUGraph,
graph(), task groups and task updates, ExternalEvent).  Graphs are
graph_tape.TapeGraph: recorded at capture, re-run at replay, host arguments
frozen unless an update region re-issues the op.
"""
from __future__ import annotations

import contextlib
from types import SimpleNamespace

import torch

from .. import graph_tape
from ..checks import device_ordinal
from ..graph_tape import CaptureError, GraphContext, TapeGraph


class NPUGraph(TapeGraph):
    """§10: torch.npu.NPUGraph (replay / reset / pool)."""


class Stream:
    def __init__(self, *a, **kw):
        pass


class ExternalEvent:
    """§10: waited on inside a captured graph, recorded by the update stream.

    A replay that reaches a captured wait whose event was not recorded since the
    previous replay would block forever on the device; here it raises."""

    def __init__(self):
        self.recorded = False
        self.in_graph = None

    def wait(self, stream):
        g = graph_tape.capturing_graph()
        if g is not None:
            self.in_graph = g
            g.waited_events.append(self)

    def reset(self, stream):
        pass   # captured together with the wait: the event re-arms after each replay

    def record(self, stream):
        self.recorded = True

    def consume_for_replay(self):
        if not self.recorded:
            raise CaptureError("replay would wait forever: an ExternalEvent captured in the graph was not "
                               "recorded since the last replay (no task update was issued for it)")
        self.recorded = False


def build(cfg) -> SimpleNamespace:
    """The torch_npu.npu namespace for one emulated machine (cfg: NpuConfig)."""
    state = {"device": 0, "stream": Stream(), "allocated": 0}

    def get_soc_version():
        if cfg.soc_version is None:
            raise AttributeError("get_soc_version")   # an old torch_npu without it
        return cfg.soc_version

    @contextlib.contextmanager
    def stream(s):
        prev, state["stream"] = state["stream"], s
        try:
            yield
        finally:
            state["stream"] = prev

    def graph(npu_graph, pool=None, stream=None, auto_dispatch_capture=False, capture_error_mode="global"):
        if auto_dispatch_capture:
            raise CaptureError("emulation: auto_dispatch_capture (NPUGraph.update) is not emulated")
        return GraphContext(npu_graph, pool=pool, stream=stream, capture_error_mode=capture_error_mode)

    def graph_task_group_begin(s):
        g = graph_tape.capturing_graph()
        if g is None:
            raise CaptureError("graph_task_group_begin outside a graph capture")
        g.open_group()

    def graph_task_group_end(s):
        g = graph_tape.capturing_graph()
        if g is None:
            raise CaptureError("graph_task_group_end outside a graph capture")
        return g.close_group()

    def graph_task_update_begin(s, handle):
        if not isinstance(handle, graph_tape.TaskGroupHandle):
            raise TypeError(f"graph_task_update_begin needs a task group handle, got {type(handle).__name__}")
        if s is not state["stream"]:
            raise CaptureError("graph_task_update_begin: issue updates on the stream made current with "
                               "torch.npu.stream(update_stream) (§10)")
        graph_tape.begin_update(handle)

    return SimpleNamespace(
        is_available=lambda: cfg.device_count > 0,
        device_count=lambda: cfg.device_count,
        current_device=lambda: state["device"],
        set_device=lambda d: state.__setitem__("device", device_ordinal("set_device", d)),
        synchronize=lambda device=None: None,
        get_device_name=lambda device=None: cfg.soc_name,
        get_soc_version=get_soc_version,
        mem_get_info=lambda device=None: (cfg.free_bytes, cfg.total_bytes),
        memory_allocated=lambda device=None: state["allocated"],
        max_memory_allocated=lambda device=None: state["allocated"],
        reset_peak_memory_stats=lambda device=None: None,
        empty_cache=lambda: None,
        manual_seed=lambda s: torch.manual_seed(s),
        Stream=Stream,
        stream=stream,
        current_stream=lambda device=None: state["stream"],
        ExternalEvent=ExternalEvent,
        NPUGraph=NPUGraph,
        graph=graph,
        graph_pool_handle=lambda: ("pool", 0),
        is_current_stream_capturing=lambda: graph_tape.capturing_graph() is not None,
        graph_task_group_begin=graph_task_group_begin,
        graph_task_group_end=graph_task_group_end,
        graph_task_update_begin=graph_task_update_begin,
        graph_task_update_end=lambda s: graph_tape.end_update(),
    )
