"""MLU graphs (torch_mlu's MLUGraph, vendors/camb.md §8) for the core's CapturedDecodeRunner.

Nothing is refreshed before a replay: every length TMO's decode kernel reads is a
device tensor the runner updates in place (§8: dlinfer captures the same way)."""
from __future__ import annotations

from halinfer.core.graph import GraphAPI


class MluGraphAPI(GraphAPI):
    def __init__(self, torch_mlu):
        self.mlu = torch_mlu.mlu

    def new_graph(self):
        return self.mlu.MLUGraph()

    def capture(self, graph, pool, stream=None):
        return self.mlu.graph(graph, pool=pool, stream=stream)

    def pool_handle(self):
        return self.mlu.graph_pool_handle()

    def synchronize(self) -> None:
        self.mlu.synchronize()

    def memory_allocated(self) -> int:
        return int(self.mlu.memory_allocated())
