"""The worker's multimodal state: each slot's images, the encoder cache, and what a
prefill step merges into the token stream.

An image is encoded the first time a step computes one of its tokens; its features stay
in the cache (keyed by content hash, shared by every slot that holds the same image)
until every slot using it has computed all of its tokens, ended, or been preempted, so
the encoder runs once per image however chunked prefill cuts the prompt.  Decode steps
only add each slot's M-RoPE position advance (nothing else changes for them).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .mm_inputs import MMInput, model_positions, total_advance
from .step_plan import StepPlan


@dataclass
class MMStep:
    """A prefill step's multimodal part: model positions, and features for token rows."""

    positions: np.ndarray              # int64 [T], or [3, T] with M-RoPE
    rows: torch.Tensor | None          # int64 [N] token rows of the step that take features
    features: torch.Tensor | None      # [N, H]
    spans: np.ndarray | None = None    # int32 [T, 2]: bidirectional key span per token (Gemma 3)


class EncoderCache:
    def __init__(self, num_slots: int):
        self.per_slot: dict[int, list[MMInput]] = {}
        self.features: dict[str, torch.Tensor] = {}   # image hash -> [length, H]
        self.users: dict[str, set[int]] = {}          # image hash -> slots still needing it
        self.advance = np.zeros(num_slots, dtype=np.int64)  # M-RoPE advance per slot
        self.encoder_runs = 0                          # images encoded (tests read this)

    def __len__(self) -> int:
        return len(self.features)

    # -- slot changes ----------------------------------------------------------------
    def apply(self, plan: StepPlan) -> None:
        for s in plan.ended_slots:
            self.release(s)
        for it in plan.inits:
            self.release(it.slot)
            if it.mm_inputs:
                self.per_slot[it.slot] = list(it.mm_inputs)
                for m in it.mm_inputs:
                    self.users.setdefault(m.hash, set()).add(it.slot)
                self.advance[it.slot] = total_advance(it.mm_inputs)

    def release(self, slot: int) -> None:
        for m in self.per_slot.pop(slot, ()):
            self._drop_user(m.hash, slot)
        self.advance[slot] = 0

    def _drop_user(self, h: str, slot: int) -> None:
        users = self.users.get(h)
        if users is None:
            return
        users.discard(slot)
        if not users:
            del self.users[h]
            self.features.pop(h, None)

    # -- steps ---------------------------------------------------------------------------
    def decode_positions(self, slots: np.ndarray, positions: np.ndarray) -> np.ndarray:
        if not self.per_slot:
            return positions
        return positions + self.advance[slots]

    def prefill_step(self, plan: StepPlan, positions: np.ndarray, model, device) -> MMStep | None:
        """None when no row of the step holds images; else what the model merges."""
        if not self.per_slot:
            return None
        slots = plan.slots.tolist()
        if not any(s in self.per_slot for s in slots):
            return None
        q_lens = plan.num_new.tolist()
        starts = np.concatenate(([0], np.cumsum(plan.num_new)[:-1])).tolist()
        mrope = any(m.rel_positions is not None for s in slots for m in self.per_slot.get(s, ()))
        pos = np.broadcast_to(positions, (3, len(positions))).copy() if mrope else positions
        spans = []   # (row start in the step, image, first token, end token) to fill
        bidir = None
        for s, q0, n in zip(slots, starts, q_lens):
            mms = self.per_slot.get(s)
            if not mms:
                continue
            lo = int(positions[q0])
            hi = lo + n
            if mrope:
                pos[:, q0:q0 + n] = model_positions(mms, positions[q0:q0 + n])
            for m in mms:
                a, b = max(lo, m.offset), min(hi, m.end)
                if a < b:
                    spans.append((q0 + a - lo, m, a - m.offset, b - m.offset, s))
                    if m.bidirectional:
                        if b < m.end:
                            raise RuntimeError(f"a prefill chunk ends inside a bidirectional image (tokens "
                                               f"[{m.offset}, {m.end}), chunk ends at {hi}); the scheduler must not")
                        if bidir is None:
                            bidir = np.zeros((len(positions), 2), dtype=np.int32)
                        bidir[q0 + a - lo:q0 + b - lo] = (m.offset, m.end)
        if not spans:
            return MMStep(pos, None, None, bidir)
        self._encode([m for _, m, _, _, _ in spans], model)
        rows = torch.cat([torch.arange(r, r + (b - a)) for r, _, a, b, _ in spans])
        feats = torch.cat([self.features[m.hash][a:b] for _, m, a, b, _ in spans])
        for _, m, _, b, s in spans:
            if b == m.length:          # the slot has computed every token of this image
                self._drop_user(m.hash, s)
        return MMStep(pos, rows.to(device), feats, bidir)

    def _encode(self, mms: list[MMInput], model) -> None:
        todo, seen = [], set()
        for m in mms:
            if m.hash not in self.features and m.hash not in seen:
                todo.append(m)
                seen.add(m.hash)
        if not todo:
            return
        outs = model.encode_images([m.data for m in todo])
        for m, f in zip(todo, outs):
            if f.shape[0] != m.length:
                raise ValueError(f"the vision encoder gave {f.shape[0]} feature rows for an image the prompt "
                                 f"holds {m.length} tokens for")
            self.features[m.hash] = f
        self.encoder_runs += len(todo)
