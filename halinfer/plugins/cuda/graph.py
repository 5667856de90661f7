"""CUDA graphs for the core's CapturedDecodeRunner (core/graph.py)."""
from __future__ import annotations

import torch

from halinfer.core.graph import GraphAPI


class CudaGraphAPI(GraphAPI):
    """torch.cuda.CUDAGraph capture and replay on one device.

    Nothing is refreshed before a replay: the Triton kernels read every length
    from the static metadata tensors, which the runner updates in place.
    """

    def __init__(self, device: torch.device):
        device = torch.device(device)
        self.device = device if device.index is not None or device.type != "cuda" else \
            torch.device("cuda", torch.cuda.current_device())

    def new_graph(self):
        return torch.cuda.CUDAGraph()

    def capture(self, graph, pool, stream=None):
        return torch.cuda.graph(graph, pool=pool, stream=stream)

    def pool_handle(self):
        return torch.cuda.graph_pool_handle()

    def synchronize(self) -> None:
        torch.cuda.synchronize(self.device)

    def memory_allocated(self) -> int:
        return torch.cuda.memory_allocated(self.device)
