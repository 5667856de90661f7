"""Running model steps: eagerly, or by replaying captured decode graphs.

A ``GraphRunner`` is called with one step (token ids, positions, host-side step
description) and returns the hidden states of every token.  The eager runner
calls the model.  ``CapturedDecodeRunner`` captures pure-decode steps for a set
of batch-size buckets and replays them, with inputs and attention metadata held
in static buffers updated in place; any other step (prefill, mixed, a batch
larger than the largest bucket) runs eagerly.  The device specifics come from a
``GraphAPI`` the backend provides (CUDA graphs, NPU graphs, MLU graphs).
"""
from __future__ import annotations

import gc
from contextlib import contextmanager

from typing import Callable

import numpy as np
import torch

from .attention import AttentionMetadata, MetadataBuilder, StepInputs
from .runtime import DeviceRuntime

ModelFn = Callable[[torch.Tensor, torch.Tensor, AttentionMetadata], torch.Tensor]


class GraphRunner:
    """Contract: ``run(input_ids, positions, step, meta_builder) -> hidden [T, H]``."""

    captured_sizes: tuple[int, ...] = ()
    graph_memory: int = 0  # bytes held by captured graphs, counted in the KV budget

    def run(self, input_ids: torch.Tensor, positions: torch.Tensor, step: StepInputs,
            builder: MetadataBuilder) -> torch.Tensor:
        raise NotImplementedError

    def can_replay(self, step: StepInputs) -> bool:
        return False

    def capture(self, **kw) -> None:
        """Capture what this runner replays (no-op for eager)."""


class EagerRunner(GraphRunner):
    def __init__(self, model_fn: ModelFn):
        self.model_fn = model_fn

    def run(self, input_ids, positions, step, builder):
        return self.model_fn(input_ids, positions, builder.build(step))


class GraphAPI:
    """What a backend supplies so the core can capture and replay its graphs
    (``Backend.graph_api(device)``); synchronizing and memory come from the DeviceRuntime."""

    def new_graph(self):  # -> object with .replay()
        raise NotImplementedError

    def capture(self, graph, pool, stream=None):  # -> context manager
        raise NotImplementedError

    def pool_handle(self):
        raise NotImplementedError

    def before_replay(self, graph, meta: AttentionMetadata) -> None:
        """Refresh what the graph froze at capture (host-side lengths), if anything."""


class ModuleGraphAPI(GraphAPI):
    """Graphs of a torch device module shaped like torch's own: ``module.graph(g, pool=, stream=)``
    and ``module.graph_pool_handle()``, with the module's graph class (CUDAGraph, MLUGraph, ...)."""

    def __init__(self, module, graph_cls):
        # Bound once: the API keeps working with the entry points it was made with, even if
        # the module's attributes are swapped later (tests install and remove emulations).
        self.module = module
        self.graph_cls = graph_cls
        self._graph, self._pool_handle = module.graph, module.graph_pool_handle

    def new_graph(self):
        return self.graph_cls()

    def capture(self, graph, pool, stream=None):
        return self._graph(graph, pool=pool, stream=stream)

    def pool_handle(self):
        return self._pool_handle()


class CapturedDecodeRunner(GraphRunner):
    """Replays decode steps (every q_len == 1) from graphs captured per bucket size."""

    def __init__(self, model_fn: ModelFn, api: GraphAPI, runtime: DeviceRuntime, sizes: list[int],
                 max_blocks_per_seq: int, block_size: int, max_seq_len: int):
        self.model_fn = model_fn
        self.api = api
        self.runtime = runtime
        self.device = device = runtime.device
        self.sizes = sorted(set(sizes))
        self.max_blocks = max_blocks_per_seq
        self.block_size = block_size
        self.max_seq_len = max_seq_len
        self.graphs: dict[int, object] = {}
        self.metas: dict[int, AttentionMetadata] = {}
        self.outputs: dict[int, torch.Tensor] = {}
        n = self.sizes[-1] if self.sizes else 0
        self.input_ids = torch.zeros(n, dtype=torch.int64, device=device)
        self.positions = torch.zeros(n, dtype=torch.int64, device=device)
        self.captured_sizes = ()

    def _padded(self, step: StepInputs, bs: int) -> StepInputs:
        b = step.num_seqs
        q_lens = np.ones(bs, dtype=np.int32)
        seq_lens = np.ones(bs, dtype=np.int32)
        seq_lens[:b] = step.seq_lens
        tables = np.zeros((bs, self.max_blocks), dtype=np.int32)
        w = step.block_tables.shape[1]
        tables[:b, :w] = step.block_tables
        slots = np.full(bs, -1, dtype=np.int64)
        slots[:b] = step.slot_mapping
        return StepInputs(q_lens, seq_lens, tables, slots, step.block_size)

    def _static_meta(self, bs: int, builder: MetadataBuilder) -> AttentionMetadata:
        meta = builder.build(self._padded(StepInputs(
            np.ones(0, np.int32), np.ones(0, np.int32), np.zeros((0, 1), np.int32),
            np.zeros(0, np.int64), self.block_size), bs))
        # Kernels must not specialise on this step's lengths: give them capacity bounds.
        meta.max_seq_len = self.max_seq_len
        return meta

    def capture(self, builder: MetadataBuilder, **kw) -> None:
        before = self.runtime.memory_allocated()
        pool = self.api.pool_handle()
        with _no_gc():
            self._capture_all(builder, pool)
        self.runtime.synchronize()
        self.graph_memory = max(0, self.runtime.memory_allocated() - before)
        self.captured_sizes = tuple(self.sizes)

    def _capture_all(self, builder, pool) -> None:
        for bs in reversed(self.sizes):  # largest first so smaller graphs reuse its pool
            meta = self._static_meta(bs, builder)
            ids, pos = self.input_ids[:bs], self.positions[:bs]
            self.model_fn(ids, pos, meta)  # warm-up: autotuning and lazy init happen outside capture
            self.runtime.synchronize()
            g = self.api.new_graph()
            with self.api.capture(g, pool):
                out = self.model_fn(ids, pos, meta)
            self.graphs[bs], self.metas[bs], self.outputs[bs] = g, meta, out

    def can_replay(self, step: StepInputs) -> bool:
        return (step.is_decode and bool(self.graphs) and step.num_seqs <= self.sizes[-1]
                and step.block_tables.shape[1] <= self.max_blocks)

    def run(self, input_ids, positions, step, builder):
        if not self.can_replay(step):
            return self.model_fn(input_ids, positions, builder.build(step))
        b = step.num_seqs
        bs = next(s for s in self.sizes if s >= b)
        self.input_ids[:b].copy_(input_ids)
        self.positions[:b].copy_(positions)
        meta = self.metas[bs]
        builder.build(self._padded(step, bs)).copy_into(meta)
        self.api.before_replay(self.graphs[bs], meta)
        self.graphs[bs].replay()
        return self.outputs[bs][:b]


@contextmanager
def _no_gc():
    """The garbage collector off while graphs are captured: a collection inside a capture runs
    the finalizers of whatever died before it (another engine's device tensors, events) on the
    capturing thread, and a device call there that is not capturable invalidates the capture."""
    gc.collect()
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()
