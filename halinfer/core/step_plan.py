"""What crosses the executor boundary each step: plain data, no Sequence objects.

The worker keeps per-slot state (block table row, tokens computed, sampling
parameters, last sampled token on the device) across steps; a plan carries only
what changed: sequences taking a slot, blocks appended, and this step's rows.
It pickles cheaply, so the multi-process executor sends it as is.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .sampling import SamplingParams


@dataclass
class SlotInit:
    """A sequence taking a batch slot (admission, or re-admission after preemption)."""

    slot: int
    num_computed: int          # tokens already in the cache (prefix-cache hits)
    num_prompt: int            # the original prompt's length (output index = position - num_prompt)
    block_ids: list[int]
    params: SamplingParams
    seed: int
    banned_ids: tuple[int, ...] = ()
    history: list[int] | None = None   # prompt + outputs so far, for penalties only
    mm_inputs: list | None = None      # the prompt's images (core/mm_inputs.MMInput), if any


@dataclass
class StepPlan:
    slots: np.ndarray                    # int64 [B]: each row's slot
    num_new: np.ndarray                  # int32 [B]: tokens computed per row
    sample: np.ndarray                   # bool [B]: rows that draw a token
    tokens: np.ndarray | None = None     # int64 [T] new tokens; None: a decode step fed from each
                                         # slot's last sampled token, already on the device
    inits: list[SlotInit] = field(default_factory=list)
    new_blocks: list[tuple[int, int, list[int]]] = field(default_factory=list)  # (slot, first index, ids)
    all_logits: bool = False             # return float32 logits of every token (prompt_logits)
    ended_slots: list[int] = field(default_factory=list)   # slots whose images the encoder cache may drop

    @property
    def is_decode(self) -> bool:
        return bool(len(self.num_new)) and bool((self.num_new == 1).all()) and self.tokens is None

    @property
    def num_tokens(self) -> int:
        return int(self.num_new.sum())


@dataclass
class StepOutput:
    """Tokens drawn by a step's sampling rows, in row order, and their logprobs."""

    tokens: list[int]
    logprobs: list[dict[int, float] | None] | None = None
