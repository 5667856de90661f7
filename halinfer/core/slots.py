"""The worker's per-slot batch state, kept across steps and updated where it changes.

A slot is a batch row a running sequence owns until it finishes or is preempted.
Its block-table row, computed-token count, prompt length and sampling parameters
live in host arrays here; a step gathers its rows with one fancy index each
instead of rebuilding them from Python objects.
"""
from __future__ import annotations

import numpy as np
import torch

from .attention import StepInputs
from .ops.sample import SamplingTensors
from .step_plan import StepPlan


class SlotTable:
    def __init__(self, num_slots: int, max_blocks_per_seq: int, block_size: int):
        S = num_slots
        self.block_size = block_size
        self.block_table = np.zeros((S, max_blocks_per_seq), dtype=np.int32)
        self.num_computed = np.zeros(S, dtype=np.int64)
        self.num_prompt = np.zeros(S, dtype=np.int64)
        self.temperature = np.ones(S, dtype=np.float32)
        self.top_k = np.full(S, -1, dtype=np.int64)
        self.top_p = np.ones(S, dtype=np.float32)
        self.min_p = np.zeros(S, dtype=np.float32)
        self.seeds = np.zeros(S, dtype=np.int64)
        self.logprobs = np.full(S, -1, dtype=np.int64)    # -1: none asked
        self.min_tokens = np.zeros(S, dtype=np.int64)
        self.banned: dict[int, list[int]] = {}             # slot -> ids masked before min_tokens
        self.penalties: dict[int, tuple[float, float, float]] = {}
        self.history: dict[int, list[int]] = {}            # slot -> prompt + outputs (penalty slots)

    def apply(self, plan: StepPlan) -> None:
        """Take in the plan's new sequences and appended blocks."""
        for it in plan.inits:
            s, p = it.slot, it.params
            self.block_table[s, :len(it.block_ids)] = it.block_ids
            self.num_computed[s] = it.num_computed
            self.num_prompt[s] = it.num_prompt
            self.temperature[s], self.top_k[s], self.top_p[s], self.min_p[s] = \
                p.temperature, p.top_k, p.top_p, p.min_p
            self.seeds[s] = it.seed
            self.logprobs[s] = -1 if p.logprobs is None else p.logprobs
            self.min_tokens[s] = p.min_tokens
            self._set(self.banned, s, list(it.banned_ids) if it.banned_ids and p.min_tokens else None)
            pen = (p.repetition_penalty, p.presence_penalty, p.frequency_penalty) if p.uses_penalties else None
            self._set(self.penalties, s, pen)
            self._set(self.history, s, list(it.history) if pen is not None else None)
        for s, first, ids in plan.new_blocks:
            self.block_table[s, first:first + len(ids)] = ids

    @staticmethod
    def _set(d: dict, key, value) -> None:
        if value is None:
            d.pop(key, None)
        else:
            d[key] = value

    def step_inputs(self, plan: StepPlan) -> tuple[np.ndarray, StepInputs, np.ndarray, np.ndarray]:
        """(positions, StepInputs, logit_rows, offsets) of the plan's rows; advances the
        slots' computed counts.  offsets: the output index each sampling row draws."""
        slots, q_lens = plan.slots, plan.num_new
        bs = self.block_size
        starts = self.num_computed[slots]
        seq_lens = starts + q_lens
        width = int(-(-int(seq_lens.max()) // bs))
        tables = self.block_table[slots, :width]
        B = len(slots)
        if plan.tokens is None:  # decode: one token per row
            positions = starts
            rows = np.arange(B)
            slot_map = tables[rows, positions // bs].astype(np.int64) * bs + positions % bs
            logit_rows = rows[plan.sample]
        else:
            T = int(q_lens.sum())
            row = np.repeat(np.arange(B), q_lens)
            q_start = np.concatenate(([0], np.cumsum(q_lens)[:-1]))
            positions = np.arange(T) - np.repeat(q_start, q_lens) + np.repeat(starts, q_lens)
            slot_map = tables[row, positions // bs].astype(np.int64) * bs + positions % bs
            logit_rows = (q_start + q_lens - 1)[plan.sample]
        self.num_computed[slots] = seq_lens
        step = StepInputs(q_lens.astype(np.int32), seq_lens.astype(np.int32), tables, slot_map, bs)
        offsets = (seq_lens - self.num_prompt[slots])[plan.sample]
        return positions, step, logit_rows, offsets

    def sampling_tensors(self, slots: np.ndarray, offsets: np.ndarray, device: torch.device) -> SamplingTensors:
        temp, top_k, top_p, min_p = self.temperature[slots], self.top_k[slots], self.top_p[slots], self.min_p[slots]
        sampled = temp > 0

        def dev(a):
            return torch.from_numpy(np.ascontiguousarray(a)).to(device, non_blocking=True)

        return SamplingTensors(
            temperature=dev(temp), top_k=dev(top_k), top_p=dev(top_p), min_p=dev(min_p),
            seeds=dev(self.seeds[slots]), offsets=dev(offsets.astype(np.int64)),
            all_greedy=not sampled.any(),
            any_top_k=bool((sampled & (top_k > 0)).any()),
            any_top_p=bool((sampled & (top_p < 1)).any()),
            any_min_p=bool((sampled & (min_p > 0)).any()),
        )

    def penalty_inputs(self, slots: np.ndarray, vocab: int, device: torch.device):
        """(prompt_mask bool [B,V], output_counts int32 [B,V], rep, pres, freq) for Ops.apply_penalties;
        rows without penalties get neutral values.  Host-side: only steps with penalties pay."""
        B = len(slots)
        prompt_mask = torch.zeros(B, vocab, dtype=torch.bool)
        counts = torch.zeros(B, vocab, dtype=torch.int32)
        rep, pres, freq = torch.ones(B), torch.zeros(B), torch.zeros(B)
        for i, s in enumerate(slots.tolist()):
            pen = self.penalties.get(s)
            if pen is None:
                continue
            hist, n_prompt = self.history[s], int(self.num_prompt[s])
            if n_prompt:
                prompt_mask[i, torch.tensor(hist[:n_prompt])] = True
            out = hist[n_prompt:]
            if out:
                counts[i].index_add_(0, torch.tensor(out), torch.ones(len(out), dtype=torch.int32))
            rep[i], pres[i], freq[i] = pen
        return tuple(t.to(device) for t in (prompt_mask, counts, rep, pres, freq))

    def record(self, slots: list[int], tokens: list[int]) -> None:
        """Sampled tokens reached the host: extend the histories penalties read."""
        if self.history:
            for s, t in zip(slots, tokens):
                h = self.history.get(s)
                if h is not None:
                    h.append(t)
