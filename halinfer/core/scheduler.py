"""Continuous batching with chunked prefill and preemption by recompute.

Each step has a token budget (max_num_batched_tokens).  Two policies:

"separate" (default): a step is either a prefill step (prompt chunks only) or a
decode step (one token for every decoding sequence).  Decode steps then always
have the shape a captured graph replays, and prefills are batched: while
sequences are decoding, waiting requests are admitted every ``prefill_interval``
decode steps (or at once when fewer than half the sequence slots are busy), so
many prompts share one large prefill step instead of each costing a step.

"mixed": one step carries both.  Running sequences go first, oldest first: a
decoding sequence takes one token, a sequence part-way through its prompt takes
its next chunk.  Then waiting sequences are admitted, oldest first, each taking
a prompt chunk from what is left of the budget.

Either way admission needs free blocks and fewer than max_num_seqs running.  When a running sequence
needs a block and none is free, the newest running sequence is preempted: its
blocks are released and it goes back to the head of the queue, to recompute
its prompt and outputs later (prefix caching often makes that cheap).  No
request is dropped and no step fails for want of memory, as long as one
sequence of max_model_len fits (checked when the engine starts).
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

from .kv_cache import BlockManager
from .mm_inputs import whole_image_cut
from .sequence import Sequence, SeqStatus
from .step_plan import SlotInit, StepOutput, StepPlan


@dataclass
class ScheduledBatch:
    seqs: list[Sequence] = field(default_factory=list)
    num_new: list[int] = field(default_factory=list)   # tokens computed this step, per sequence
    preempted: list[Sequence] = field(default_factory=list)
    plan: StepPlan | None = None     # what the worker is sent (Scheduler.plan)

    def __len__(self) -> int:
        return len(self.seqs)

    @property
    def num_tokens(self) -> int:
        return sum(self.num_new)

    @property
    def is_decode(self) -> bool:
        """Every sequence computes exactly one token (its last, known or in flight)."""
        return bool(self.seqs) and all(n == 1 for n in self.num_new) and \
            all(s.num_tokens - s.num_computed <= 1 for s in self.seqs)


POLICIES = ("separate", "mixed")


@dataclass
class TokenEvent:
    """One sequence's news from a step: a token, and/or how it ended."""

    request_id: str
    index: int
    token: int | None
    logprobs: dict[int, float] | None = None
    finish_reason: str | None = None
    stop_reason: object = None
    error: str | None = None

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None


class Scheduler:
    def __init__(self, block_manager: BlockManager, max_num_seqs: int, max_num_batched_tokens: int,
                 policy: str = "separate", prefill_interval: int = 16, max_model_len: int = 1 << 30,
                 eos_ids=frozenset(), num_slots: int | None = None):
        if policy not in POLICIES:
            raise ValueError(f"scheduling policy {policy!r} is unknown; accepted: {', '.join(POLICIES)}")
        self.bm = block_manager
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.policy = policy
        self.prefill_interval = prefill_interval
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.num_preemptions = 0
        self._decodes_since_prefill = 0
        self.max_model_len = max_model_len
        self.eos_ids = frozenset(eos_ids)
        # Batch rows the worker keeps state for; one per running sequence (+ spares).
        self.free_slots = list(range((num_slots or max_num_seqs) - 1, -1, -1))
        self.ended_mm_slots: list[int] = []   # slots released by sequences with images (next plan says so)

    def add(self, seq: Sequence) -> None:
        seq.bind_limits(self.max_model_len, self.eos_ids)
        seq.status = SeqStatus.WAITING
        self.waiting.append(seq)

    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def _take_slot(self, seq: Sequence) -> None:
        seq.slot = self.free_slots.pop()
        seq.slot_fresh = True
        seq.sampled_in_slot = False

    def _release_slot(self, seq: Sequence) -> None:
        if seq.slot >= 0:
            if seq.mm_inputs:
                self.ended_mm_slots.append(seq.slot)
            self.free_slots.append(seq.slot)
            seq.slot = -1

    def _preempt(self, seq: Sequence) -> None:
        self.running.remove(seq)
        self.bm.free_seq(seq)
        self._release_slot(seq)
        seq.num_computed = 0
        seq.status = SeqStatus.WAITING
        seq.num_preemptions += 1
        self.num_preemptions += 1
        self.waiting.appendleft(seq)

    def schedule(self) -> ScheduledBatch:
        """The next step, planned (batch.plan) and accounted (num_computed advanced)."""
        return self._planned(self._pick())

    def _pick(self) -> ScheduledBatch:
        if self.policy == "mixed":
            return self._schedule_mixed()
        if self.prefill_due():
            batch = self._schedule_prefill()
            if batch.seqs:
                self._decodes_since_prefill = 0
                return batch
        batch = self._schedule_decode()
        if batch.seqs:
            self._decodes_since_prefill += 1
            return batch
        batch = self._schedule_prefill()  # nothing decodes: make progress on prompts
        if batch.seqs or not self.running:
            return batch
        return self._schedule_mixed()  # prompts blocked for blocks: the mixed path preempts to free some

    @staticmethod
    def _in_prefill(seq: Sequence) -> bool:
        return seq.num_tokens - seq.num_computed > 1

    def prefill_due(self) -> bool:
        if any(self._in_prefill(s) for s in self.running):
            return True  # a chunked prompt continues at once
        if not self.waiting or len(self.running) >= self.max_num_seqs:
            return False
        return (len(self.running) < self.max_num_seqs // 2
                or self._decodes_since_prefill >= self.prefill_interval)

    def _schedule_prefill(self) -> ScheduledBatch:
        """Prompt chunks only: running sequences mid-prompt first, then admissions."""
        batch = ScheduledBatch()
        budget = self.max_num_batched_tokens
        for seq in self.running:
            if budget <= 0:
                break
            if not self._in_prefill(seq):
                continue
            n = self._chunk(seq, budget)
            if n == 0:
                continue   # the next image must be computed whole: it waits for a larger budget
            if not self.bm.can_allocate(seq, seq.num_computed + n):
                continue  # the decode step's preemption will free blocks
            self.bm.allocate(seq, seq.num_computed + n)
            batch.seqs.append(seq)
            batch.num_new.append(n)
            budget -= n
        self._admit(batch, budget)
        return batch

    def _schedule_decode(self) -> ScheduledBatch:
        """One token for every running sequence that has finished its prompt."""
        batch = ScheduledBatch()
        i = 0
        while i < len(self.running):
            seq = self.running[i]
            if self._in_prefill(seq):
                i += 1
                continue
            # Fast path: a new block is needed only at a block boundary.
            if seq.num_computed < len(seq.block_ids) * self.bm.block_size:
                batch.seqs.append(seq)
                batch.num_new.append(1)
                i += 1
                continue
            if not self._reserve(seq, 1, batch):
                break  # seq itself was the last one left to preempt
            i += 1
        return batch

    def _reserve(self, seq: Sequence, n: int, batch: ScheduledBatch) -> bool:
        """Blocks for n more tokens of a running seq, preempting the newest running
        sequences while none are free; adds seq to the batch.  False if seq itself
        had to be preempted."""
        while not self.bm.can_allocate(seq, seq.num_computed + n):
            victim = self.running[-1]
            self._preempt(victim)
            batch.preempted.append(victim)
            if victim is seq:
                return False
        self.bm.allocate(seq, seq.num_computed + n)
        batch.seqs.append(seq)
        batch.num_new.append(n)
        return True

    def _admit(self, batch: ScheduledBatch, budget: int) -> None:
        while self.waiting and budget > 0 and len(self.running) < self.max_num_seqs:
            seq = self.waiting[0]
            if not seq.block_ids:
                seq.num_computed = self.bm.match_prefix(seq)
            n = self._chunk(seq, budget)
            if n == 0 or not self.bm.can_allocate(seq, seq.num_computed + n):
                self.bm.free_seq(seq)  # give back prefix hits; retry on a later step
                seq.num_computed = 0
                break
            self.bm.allocate(seq, seq.num_computed + n)
            self.bm.count_lookup(seq, seq.num_computed)  # only now: a failed admission is retried
            self.waiting.popleft()
            self._take_slot(seq)
            seq.status = SeqStatus.RUNNING
            self.running.append(seq)
            batch.seqs.append(seq)
            batch.num_new.append(n)
            budget -= n

    @staticmethod
    def _chunk(seq: Sequence, budget: int) -> int:
        """Tokens of seq's prompt to compute now: what is left, up to the budget, cut back so
        the chunk never ends inside an image whose tokens attend both ways (Gemma 3)."""
        n = min(seq.num_tokens - seq.num_computed, budget)
        if seq.mm_inputs and n < seq.num_tokens - seq.num_computed:
            n = whole_image_cut(seq.mm_inputs, seq.num_computed, n)
        return n

    def _schedule_mixed(self) -> ScheduledBatch:
        batch = ScheduledBatch()
        budget = self.max_num_batched_tokens
        i = 0
        while i < len(self.running) and budget > 0:
            seq = self.running[i]
            n = self._chunk(seq, budget)
            if n == 0:   # a whole image does not fit in what is left of the budget
                i += 1
                continue
            if not self._reserve(seq, n, batch):
                break  # seq itself was the last one left to preempt
            budget -= n
            i += 1

        # Admit new work only when nothing had to be preempted: admitting now would
        # take the blocks back from the sequences that were just denied them.
        if not batch.preempted:
            self._admit(batch, budget)
        return batch

    # -- planning: what the worker is told ------------------------------------------------
    def _planned(self, batch: ScheduledBatch) -> ScheduledBatch:
        """Describe the batch for the worker, then advance num_computed (the KV the step
        will have written), so the next step can be planned before this one's tokens
        reach the host."""
        if not batch.seqs:
            return batch
        seqs, B = batch.seqs, len(batch.seqs)
        num_new = np.asarray(batch.num_new, dtype=np.int32)
        # Device-fed decode: every row's input is the token its slot sampled last.
        decode = batch.is_decode and all(s.sampled_in_slot for s in seqs)
        inits, new_blocks = [], []
        for s in seqs:
            if s.slot_fresh:
                inits.append(SlotInit(s.slot, s.num_computed, s.num_prompt, list(s.block_ids), s.params, s.seed,
                                      tuple(s.banned_ids),
                                      list(s.token_ids) if s.params.uses_penalties else None,
                                      s.mm_inputs or None))
                s.slot_fresh = False
                s.blocks_sent = len(s.block_ids)
            elif len(s.block_ids) > s.blocks_sent:
                new_blocks.append((s.slot, s.blocks_sent, s.block_ids[s.blocks_sent:]))
                s.blocks_sent = len(s.block_ids)
        slots = np.fromiter((s.slot for s in seqs), dtype=np.int64, count=B)
        if decode:
            # Each row's input is its slot's last sampled token, on the device already.
            tokens, sample = None, np.ones(B, dtype=bool)
        else:
            toks: list[int] = []
            for s, n in zip(seqs, batch.num_new):
                toks += s.token_ids[s.num_computed:s.num_computed + n]
            tokens = np.asarray(toks, dtype=np.int64)
            sample = np.fromiter((s.num_computed + n == s.num_tokens for s, n in zip(seqs, batch.num_new)),
                                 dtype=bool, count=B)
        batch.plan = StepPlan(slots, num_new, sample, tokens, inits, new_blocks)
        if self.ended_mm_slots:
            batch.plan.ended_slots, self.ended_mm_slots = self.ended_mm_slots, []
        for s, n, m in zip(seqs, batch.num_new, sample):
            s.num_computed += n
            s.sampled_in_slot |= bool(m)
            if tokens is not None:
                self.bm.register_full_blocks(s)
        return batch

    def schedule_successor(self, prev: ScheduledBatch) -> ScheduledBatch | None:
        """Async scheduling: the decode step after ``prev`` while prev's tokens are still on
        the device, or None when the next step needs prev's results (a prefill is due, a
        sequence ends for length, blocks are short).  Its rows read prev's tokens on the
        device; a row whose prev token turns out to stop it is dropped in update()."""
        if self.prefill_due():
            return None
        sampled = prev.seqs if prev.plan is None else [s for s, m in zip(prev.seqs, prev.plan.sample) if m]
        keep = [s for s in sampled if s.status is not SeqStatus.FINISHED and s.needs_token(in_flight=1)]
        if not keep:
            return None
        bs = self.bm.block_size
        grow = [s for s in keep if s.num_computed >= len(s.block_ids) * bs]   # at a block boundary
        if len(grow) > self.bm.num_free:
            return None
        for s in grow:
            self.bm.allocate(s, s.num_computed + 1)
        self._decodes_since_prefill += 1
        return self._planned(ScheduledBatch(keep, [1] * len(keep)))

    # -- results ------------------------------------------------------------------------------
    def update(self, batch: ScheduledBatch, out: StepOutput) -> list[TokenEvent]:
        """Append a step's sampled tokens, apply the stop rules, free what finished."""
        events = []
        rows = batch.seqs if batch.plan is None else [s for s, m in zip(batch.seqs, batch.plan.sample) if m]
        lps = out.logprobs
        bs, caching = self.bm.block_size, self.bm.prefix_caching
        finished = SeqStatus.FINISHED
        for i, (seq, tok) in enumerate(zip(rows, out.tokens)):
            if seq.status is finished:
                continue  # it ended (or was aborted) while this step was in flight
            seq.token_ids.append(tok)
            if caching and min(seq.num_computed, len(seq.token_ids)) >= (len(seq.block_hashes) + 1) * bs:
                self.bm.register_full_blocks(seq)   # a block just filled with known tokens
            end = seq.stop_after(tok)
            lp = lps[i] if lps else None
            if end is not None:
                seq.finish_reason, seq.stop_reason = end
                self.finish(seq)
            events.append(TokenEvent(seq.request_id, seq.index, tok, lp, seq.finish_reason, seq.stop_reason))
        return events

    def fail(self, batch: ScheduledBatch, error: str) -> list[TokenEvent]:
        """A step raised: finish its sequences with the error (the others go on)."""
        events = []
        for seq in batch.seqs:
            if seq.is_finished:
                continue
            seq.finish_reason, seq.error = "error", error
            self.finish(seq)
            events.append(TokenEvent(seq.request_id, seq.index, None, None, "error", None, error))
        return events

    def finish(self, seq: Sequence) -> None:
        if seq in self.running:
            self.running.remove(seq)
        elif seq in self.waiting:
            self.waiting.remove(seq)
        self.bm.free_seq(seq)
        self._release_slot(seq)
        seq.status = SeqStatus.FINISHED
