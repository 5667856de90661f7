"""The worker: one device, the model on it, its KV cache, captured graphs and sampling.

The engine core talks to workers only through an executor, with StepPlans; a worker
builds the model through ``ModelSpec.factory`` (the core never imports the models).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from .attention import StepInputs
from .device import resolve_device
from .distributed import init_tp_group
from .model_protocol import ModelSpec
from .runner import ModelRunner, PendingStep, kv_bytes_per_block, kv_mode
from .step_plan import StepOutput, StepPlan

log = logging.getLogger("halinfer")


@dataclass
class WorkerConfig:
    device: str                     # backend name [":index"], as resolve_device() takes it
    model: ModelSpec
    block_size: int
    kv_cache_dtype: str
    max_num_seqs: int
    max_num_batched_tokens: int
    gpu_memory_utilization: float
    graphs: bool                    # capture decode graphs
    num_kv_blocks: int | None = None
    rank: int = 0
    world_size: int = 1
    local_rank: int | None = None   # device index on this host (None: rank); torchrun's LOCAL_RANK
    dist_init_method: str | None = None   # torch.distributed rendezvous ("tcp://...", None: env://)

    @property
    def num_slots(self) -> int:
        return self.max_num_seqs + 1   # one spare row for prompt_logits


class Worker:
    def __init__(self, cfg: WorkerConfig):
        self.cfg = cfg
        dev = resolve_device(cfg.device)
        if cfg.world_size > 1 and dev.index is None and dev.backend.device_type != "cpu":
            # rank r drives the backend's device r on its host (CPU ranks share "cpu")
            dev = resolve_device(f"{dev.backend.name}:{cfg.rank if cfg.local_rank is None else cfg.local_rank}")
        self.backend = b = dev.backend
        self.device = dev.torch_device
        self.runtime = b.runtime(self.device)
        self.runtime.set_device()
        self.tp = init_tp_group(b.dist_backend, cfg.rank, cfg.world_size, cfg.dist_init_method, self.device)
        # Graphs replay the all-reduces they captured only where the collective allows it.
        self.use_graphs = cfg.graphs and (cfg.world_size == 1 or b.graph_collectives)
        if cfg.graphs and not self.use_graphs and cfg.rank == 0:
            log.info("%s: %s collectives are not declared capturable in graphs; decode runs eagerly "
                     "with tensor_parallel_size=%d", b.name, b.dist_backend, cfg.world_size)
        b.manual_seed(cfg.model.seed)   # the same seed on every rank: identical sampling everywhere
        self.model = cfg.model.factory(cfg.model, b.ops, self.device, tp=self.tp)
        self.runner: ModelRunner | None = None
        self.graph_memory_estimate = 0

    # -- start-up: size the KV cache, allocate it, capture graphs -------------------
    def kv_bytes_per_block(self) -> int:
        return kv_bytes_per_block(self.model.kv_cache_spec(), self.cfg.block_size, self.cfg.model.dtype,
                                  kv_mode(self.cfg.kv_cache_dtype))

    def determine_num_blocks(self) -> tuple[int, str]:
        """(blocks, where the number came from) for this device's KV cache."""
        cfg = self.cfg
        if cfg.num_kv_blocks is not None:
            return int(cfg.num_kv_blocks), "num_kv_blocks"
        in_use = self._profile_peak_memory()
        budget = self.runtime.kv_cache_budget(cfg.gpu_memory_utilization, in_use)
        return budget // self.kv_bytes_per_block(), f"{budget / 2**30:.2f} GiB KV budget"

    def init_cache(self, num_blocks: int) -> None:
        cfg = self.cfg
        self.runner = ModelRunner(self.model, self.backend, self.device, cfg.model.dtype, cfg.block_size, num_blocks,
                                  cfg.kv_cache_dtype, cfg.model.max_model_len, cfg.num_slots)
        if self.use_graphs:
            self.runner.enable_graphs(cfg.max_num_seqs)

    def _profile_peak_memory(self) -> int:
        """Peak device memory of the largest step the scheduler may run (weights included).

        Runs one forward of max_num_batched_tokens dummy tokens against a one-block
        scratch cache, samples max_num_seqs rows of logits, and reads the allocator's
        peak (plus what captured graphs will hold).  Backends that do not track memory
        report 0 and skip the work.
        """
        b, rt, dev, cfg = self.backend, self.runtime, self.device, self.cfg
        rt.synchronize()
        if rt.max_memory_allocated() == 0:
            return 0
        rt.reset_peak_memory()
        scratch = ModelRunner(self.model, b, dev, cfg.model.dtype, cfg.block_size, 1, "auto",
                              cfg.model.max_model_len, 1)
        self._dummy_forward(scratch, cfg.max_num_batched_tokens)
        if self.use_graphs:
            # Prefill steps of other sizes pick other kernel tiles (Triton compiles each on first
            # use): compile them now, not inside the first requests' time to first token.
            n = cfg.max_num_batched_tokens // 2
            while n >= 16:
                self._dummy_forward(scratch, n)
                n //= 2
        # A decode step of max_num_seqs rows samples from max_num_seqs rows of logits.
        logits = torch.empty(cfg.max_num_seqs, cfg.model.vocab_size, dtype=torch.float32, device=dev)
        logits.normal_()
        logits.softmax(-1)
        del logits
        rt.synchronize()
        peak = rt.max_memory_allocated()
        graph_bytes = 0
        if self.use_graphs:
            # Graphs are captured after the cache exists (they bake its addresses in), so
            # measure what they will hold now: the largest bucket's pool, which the smaller
            # buckets share.
            before = rt.memory_allocated()
            g = scratch.captured_runner([max(b.graph_capture_sizes(cfg.max_num_seqs))])
            rt.synchronize()
            graph_bytes = max(0, rt.memory_allocated() - before)
            del g
        del scratch
        rt.empty_cache()
        self.graph_memory_estimate = graph_bytes
        return peak + graph_bytes

    def _dummy_forward(self, scratch: ModelRunner, total: int) -> None:
        """A prefill forward of ``total`` dummy tokens against the one-block scratch cache,
        split into sequences no longer than max_model_len - 1."""
        bs, dev = self.cfg.block_size, self.device
        per = max(1, self.cfg.model.max_model_len - 1)
        q_lens = []
        while total > 0:
            q_lens.append(min(per, total))
            total -= q_lens[-1]
        q = np.asarray(q_lens, dtype=np.int32)
        T = int(q.sum())
        starts = np.concatenate(([0], np.cumsum(q)[:-1]))
        positions = np.arange(T) - np.repeat(starts, q)
        width = -(-int(q.max()) // bs)
        step = StepInputs(q, q.copy(), np.zeros((len(q), width), np.int32), np.zeros(T, np.int64), bs)
        scratch.run_tokens(torch.zeros(T, dtype=torch.int64, device=dev), positions, step)

    # -- steps ---------------------------------------------------------------------
    def launch(self, plan: StepPlan) -> PendingStep:
        return self.runner.launch(plan)

    def collect(self, pending: PendingStep) -> StepOutput:
        return self.runner.collect(pending)

    def all_logits(self, plan: StepPlan) -> torch.Tensor:
        return self.runner.all_logits(plan).cpu()

    def graphs_captured(self) -> bool:
        return bool(self.runner is not None and self.runner.graph.captured_sizes)

    @property
    def graphs(self) -> bool:
        return self.graphs_captured()
