"""Executors: how the engine core drives its workers.

``launch(plan)`` queues a step and returns a handle; ``collect(handle)`` waits for its
tokens.  Launch and collect are apart so that async scheduling can queue step N+1
before step N's tokens are read.  The in-process executor calls one Worker directly
(no added per-step cost); the multi-process one (mp_executor.py) runs one worker
process per device rank in lockstep.
"""
from __future__ import annotations

import torch

from .step_plan import StepOutput, StepPlan
from .worker import Worker, WorkerConfig


class Executor:
    def determine_num_blocks(self) -> tuple[int, str]:
        """(KV blocks every rank can hold, where the figure came from)."""
        raise NotImplementedError

    def init_cache(self, num_blocks: int) -> None:
        raise NotImplementedError

    def launch(self, plan: StepPlan):
        raise NotImplementedError

    def collect(self, handle) -> StepOutput:
        raise NotImplementedError

    def execute(self, plan: StepPlan) -> StepOutput:
        return self.collect(self.launch(plan))

    def all_logits(self, plan: StepPlan) -> torch.Tensor:
        """float32 [T, V] on the host: logits at every token of a prefill plan."""
        raise NotImplementedError

    @property
    def graphs(self) -> bool:
        """Whether decode steps replay captured graphs."""
        raise NotImplementedError

    def shutdown(self) -> None:
        pass


class InProcessExecutor(Executor):
    """One worker in the caller's process: every call goes straight through."""

    def __init__(self, cfg: WorkerConfig):
        self.worker = Worker(cfg)

    def determine_num_blocks(self):
        return self.worker.determine_num_blocks()

    def init_cache(self, num_blocks):
        self.worker.init_cache(num_blocks)

    def launch(self, plan):
        return self.worker.launch(plan)

    def collect(self, handle):
        return self.worker.collect(handle)

    def all_logits(self, plan):
        return self.worker.all_logits(plan)

    @property
    def graphs(self):
        return self.worker.graphs

    def shutdown(self) -> None:
        # A rank torchrun started joined a process group: leave it before exit, or gloo's
        # threads can abort the process at teardown ("terminate called without an active
        # exception", seen once in CI), as the multi-process workers already do on shutdown.
        if self.worker.cfg.world_size > 1:
            from . import distributed
            distributed.destroy()
