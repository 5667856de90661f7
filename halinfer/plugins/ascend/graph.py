"""aclgraph decode graphs (torch_npu NPUGraph) with host-side lengths refreshed per replay.

A captured graph freezes host arguments; FIA's ``actual_seq_lengths(_kv)`` are
such arguments (vendors/ascend.md §10).  So, while a graph is being captured,
each FIA launch goes into its own task group, behind an ExternalEvent wait, and
is remembered (``UpdateRecord``).  Before every replay ``before_replay``
re-issues each remembered launch inside a task-update region on a side stream,
with the lengths of the step about to run, and records the event the graph
waits on (the protocol of torch_npu's graph_task_* APIs, as dlinfer and
vllm-ascend drive them).  ATB paged attention on the 300I Duo reads its lengths
from a device tensor and needs no update.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any

from halinfer.core.graph import GraphAPI


@dataclass
class UpdateRecord:
    """One captured FIA launch: how to re-issue it with new host-side lengths."""

    handle: Any                 # torch_npu task group handle
    event: Any                  # the ExternalEvent the graph waits on before this launch
    args: tuple                 # (query, key, value) as captured
    kwargs: dict                # every keyword as captured, workspace and out included
    host_fields: dict[str, str]  # FIA keyword -> AscendMetadata attribute holding its new value


class CaptureState:
    """Shared by the ops and the graph API: is a capture open, and where records go."""

    def __init__(self):
        self.records: list[UpdateRecord] | None = None

    @property
    def active(self) -> bool:
        return self.records is not None


@dataclass
class AscendGraph:
    """An NPUGraph and the FIA launches to refresh before each of its replays."""

    npu_graph: Any
    records: list[UpdateRecord] = field(default_factory=list)

    def replay(self):
        self.npu_graph.replay()


class AscendGraphAPI(GraphAPI):
    def __init__(self, torch_npu, state: CaptureState):
        self.npu = torch_npu
        self.state = state
        self._update_stream = None

    def new_graph(self):
        return AscendGraph(self.npu.npu.NPUGraph())

    @contextlib.contextmanager
    def capture(self, graph: AscendGraph, pool, stream=None):
        with self.npu.npu.graph(graph.npu_graph, pool=pool, stream=stream):
            self.state.records = graph.records
            try:
                yield graph
            finally:
                self.state.records = None

    def pool_handle(self):
        return self.npu.npu.graph_pool_handle()

    def before_replay(self, graph: AscendGraph, meta) -> None:
        if not graph.records:
            return
        npu = self.npu.npu
        if self._update_stream is None:
            self._update_stream = npu.Stream()
        us = self._update_stream
        with npu.stream(us):
            for r in graph.records:
                kw = dict(r.kwargs)
                for key, attr in r.host_fields.items():
                    kw[key] = getattr(meta, attr)
                npu.graph_task_update_begin(us, r.handle)
                self.npu.npu_fused_infer_attention_score.out(*r.args, **kw)
                npu.graph_task_update_end(us)
                r.event.record(us)
