"""The engine core: scheduler + KV block manager + the step loop, on token ids only.

A step is ``schedule -> executor.launch/collect -> scheduler.update``.  With async
scheduling a decode step's successor is planned by the scheduler
(``schedule_successor``) and launched before the step's tokens are read, so host
bookkeeping overlaps device work.  Text (tokenizing, detokenizing, stop strings) is
the front end's business; the core answers with TokenEvents.

A step that raises finishes only the sequences in it, with finish_reason "error"
and the message; their blocks are freed and the engine goes on with the others.
"""
from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass

import numpy as np
import torch

from .config import EngineConfig
from .executor import Executor
from .kv_cache import BlockManager
from .sampling import SamplingParams
from .scheduler import ScheduledBatch, Scheduler, TokenEvent
from .sequence import Sequence
from .step_plan import SlotInit, StepPlan

log = logging.getLogger("halinfer")


@dataclass
class EngineRequest:
    """A request as the core takes it: validated token ids and sampling parameters."""

    request_id: str
    prompt_token_ids: list[int]
    params: SamplingParams
    mm_inputs: list | None = None   # images (core/mm_inputs.MMInput) at placeholder positions


class EngineCore:
    def __init__(self, executor: Executor, cfg: EngineConfig, *, max_model_len: int, block_size: int,
                 num_blocks: int, vocab_size: int, eos_ids, max_num_batched_tokens: int):
        self.executor = executor
        self.cfg = cfg
        self.max_model_len = max_model_len
        self.vocab_size = vocab_size
        self.eos_ids = frozenset(eos_ids)
        self.block_manager = BlockManager(num_blocks, block_size, cfg.enable_prefix_caching)
        self.scheduler = Scheduler(self.block_manager, cfg.max_num_seqs, max_num_batched_tokens,
                                   cfg.scheduling_policy, prefill_interval=cfg.prefill_interval,
                                   max_model_len=max_model_len, eos_ids=self.eos_ids)
        self.spare_slot = cfg.max_num_seqs  # the worker's extra row (prompt_logits)
        self.rng = np.random.default_rng(cfg.seed)
        self._ids = itertools.count()
        self._arrival = itertools.count()
        self.seqs: dict[str, list[Sequence]] = {}
        self._pending: tuple[ScheduledBatch, object] | None = None  # launched, tokens not read yet
        # Steps launched, by kind, and their tokens (benchmarks read these).
        self.stats = {"prefill_steps": 0, "prefill_tokens": 0, "decode_steps": 0, "decode_tokens": 0}

    # -- requests -----------------------------------------------------------------------
    def add_request(self, req: EngineRequest) -> None:
        rid, ids, params = req.request_id, req.prompt_token_ids, req.params
        if rid in self.seqs:
            raise ValueError(f"request id {rid!r} is already in use")
        if not ids:
            raise ValueError("the prompt is empty (0 tokens); at least one token is needed")
        bad = [t for t in ids if not 0 <= t < self.vocab_size]
        if bad:
            raise ValueError(f"prompt token id {bad[0]} is outside the vocabulary [0, {self.vocab_size})")
        if len(ids) >= self.max_model_len:
            raise ValueError(f"the prompt has {len(ids)} tokens; the context (max_model_len) is {self.max_model_len}, "
                             f"so a prompt may have at most {self.max_model_len - 1}")
        mm = list(req.mm_inputs or ())
        for m in mm:
            if not 0 <= m.offset < m.end <= len(ids):
                raise ValueError(f"an image's tokens [{m.offset}, {m.end}) lie outside the prompt of {len(ids)} tokens")
            budget = self.scheduler.max_num_batched_tokens
            if m.bidirectional and m.length > budget:   # one chunk must hold it (scheduler._chunk)
                raise ValueError(f"an image of {m.length} tokens attends to itself both ways, so one prefill step "
                                 f"must hold it, but max_num_batched_tokens is {budget}; raise it")
        banned = frozenset()
        if params.min_tokens:
            banned = frozenset(params.stop_token_ids) | (frozenset() if params.ignore_eos else self.eos_ids)
        seqs = []
        for j in range(params.n):
            if params.seed is None:
                seed = int(self.rng.integers(0, 2**62))
            else:  # completions of one seeded request must differ from each other, reproducibly
                seed = params.seed if j == 0 else int(np.random.default_rng([params.seed, j]).integers(0, 2**62))
            seqs.append(Sequence(seq_id=next(self._ids), request_id=rid, index=j, prompt_token_ids=list(ids),
                                 params=params, seed=seed, arrival=next(self._arrival), banned_ids=banned,
                                 mm_inputs=mm))
        self.seqs[rid] = seqs
        for s in seqs:
            self.scheduler.add(s)

    def abort(self, request_id: str) -> bool:
        """Finish a request's unfinished sequences ("abort") and free what they hold."""
        seqs = self.seqs.pop(request_id, None)
        if seqs is None:
            return False
        for s in seqs:
            if not s.is_finished:
                s.finish_reason = "abort"
                self.scheduler.finish(s)
        return True

    def finish_seq(self, request_id: str, index: int, reason: str, stop_reason=None) -> None:
        """The front end ended one completion (a stop string matched)."""
        seqs = self.seqs.get(request_id)
        if seqs is None:
            return
        s = seqs[index]
        if not s.is_finished:
            s.finish_reason, s.stop_reason = reason, stop_reason
            self.scheduler.finish(s)
        self._forget_if_done(request_id)

    def _forget_if_done(self, request_id: str) -> None:
        seqs = self.seqs.get(request_id)
        if seqs is not None and all(s.is_finished for s in seqs):
            del self.seqs[request_id]

    def has_unfinished(self) -> bool:
        """Work left for step(): queued or running sequences.  A launched step whose
        sequences have all ended meanwhile is collected and dropped by the next step."""
        if self.scheduler.has_work():
            return True
        return self._pending is not None and any(not s.is_finished for s in self._pending[0].seqs)

    @property
    def num_running(self) -> int:
        return len(self.scheduler.running)

    @property
    def num_waiting(self) -> int:
        return len(self.scheduler.waiting)

    # -- the loop -------------------------------------------------------------------------
    def step(self) -> list[TokenEvent]:
        """Run one step; return the events of the step whose tokens were read.

        With async scheduling a decode step's events arrive one call later (its
        successor is launched first)."""
        if self._pending is not None:
            batch, handle = self._pending
            self._pending = None
            events = []
            succ = self.scheduler.schedule_successor(batch)
            if succ is not None:
                events += self._launch(succ, keep_pending=True)
            return self._collect(batch, handle) + events
        batch = self.scheduler.schedule()
        if not batch.seqs:
            return []
        return self._launch(batch, keep_pending=self._may_overlap(batch))

    def _launch(self, batch: ScheduledBatch, keep_pending: bool) -> list[TokenEvent]:
        try:
            handle = self.executor.launch(batch.plan)
        except Exception as e:  # noqa: BLE001 - the step's requests fail, the engine goes on
            return self._fail(batch, e)
        kind = "decode" if batch.plan.is_decode else "prefill"
        self.stats[f"{kind}_steps"] += 1
        self.stats[f"{kind}_tokens"] += batch.plan.num_tokens
        if keep_pending:
            self._pending = (batch, handle)
            return []
        return self._collect(batch, handle)

    def _collect(self, batch: ScheduledBatch, handle) -> list[TokenEvent]:
        try:
            out = self.executor.collect(handle)
        except Exception as e:  # noqa: BLE001
            return self._fail(batch, e)
        events = self.scheduler.update(batch, out)
        for ev in events:
            if ev.finished:
                self._forget_if_done(ev.request_id)
        return events

    def _fail(self, batch: ScheduledBatch, e: Exception) -> list[TokenEvent]:
        log.error("a step of %d sequence(s) failed: %s: %s", len(batch.seqs), type(e).__name__, e,
                  exc_info=log.isEnabledFor(logging.DEBUG))
        events = self.scheduler.fail(batch, f"{type(e).__name__}: {e}")
        for ev in events:
            self._forget_if_done(ev.request_id)
        return events

    def _may_overlap(self, batch: ScheduledBatch) -> bool:
        plan = batch.plan
        return (self.cfg.async_scheduling and plan.is_decode and bool(plan.sample.all())
                # penalties read the output history on the host, which lags by a step here
                and not any(s.params.uses_penalties for s in batch.seqs))

    # -- prompt logits ------------------------------------------------------------------------
    def prompt_logits(self, prompt_token_ids: list[int], mm_inputs: list | None = None) -> torch.Tensor:
        """float32 [len, vocab]: the model's logits at every prompt position (one prefill,
        through the same cache and kernels as generation; blocks are released after)."""
        ids = list(prompt_token_ids)
        if not 0 < len(ids) <= self.max_model_len:
            raise ValueError(f"prompt length {len(ids)} must be in [1, {self.max_model_len}]")
        if self._pending is not None:
            raise RuntimeError("prompt_logits needs an idle engine (a step is in flight)")
        seq = Sequence(seq_id=next(self._ids), request_id="__logits__", index=0, prompt_token_ids=ids,
                       params=SamplingParams(), seed=0, arrival=-1)
        if not self.block_manager.can_allocate(seq, len(ids)):
            raise RuntimeError("not enough free KV blocks for prompt_logits; call it while the engine is idle")
        self.block_manager.allocate(seq, len(ids))
        n = len(ids)
        plan = StepPlan(np.array([self.spare_slot]), np.array([n], dtype=np.int32), np.zeros(1, dtype=bool),
                        np.asarray(ids, dtype=np.int64),
                        [SlotInit(self.spare_slot, 0, n, list(seq.block_ids), seq.params, 0, mm_inputs=mm_inputs)],
                        all_logits=True)
        try:
            return self.executor.all_logits(plan)
        finally:
            self.block_manager.free_seq(seq)

    def shutdown(self) -> None:
        self.executor.shutdown()
