"""CUDA graphs on MACA: MetaX's build keeps torch.cuda.CUDAGraph, and dlinfer/lmdeploy
capture MACA decode with the stock CUDA graph runner (vendors/maca.md §5).

This mirrors the CUDA plugin's CudaGraphAPI, with the torch.cuda entry points
bound once when the API object is made.  Nothing is refreshed before a replay:
flash_attn_with_kvcache reads every length from device tensors (§5)."""
from __future__ import annotations

import torch

from halinfer.core.graph import GraphAPI


class MacaGraphAPI(GraphAPI):
    def __init__(self):
        cuda = torch.cuda
        self._graph_cls, self._graph_ctx = cuda.CUDAGraph, cuda.graph
        self._pool, self._sync, self._allocated = cuda.graph_pool_handle, cuda.synchronize, cuda.memory_allocated

    def new_graph(self):
        return self._graph_cls()

    def capture(self, graph, pool, stream=None):
        return self._graph_ctx(graph, pool=pool, stream=stream)

    def pool_handle(self):
        return self._pool()

    def synchronize(self) -> None:
        self._sync()

    def memory_allocated(self) -> int:
        return int(self._allocated())
