"""A sequence: one prompt plus the tokens generated for it."""
from __future__ import annotations

import enum
from dataclasses import dataclass, field

from .sampling import SamplingParams


class SeqStatus(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


@dataclass(eq=False)
class Sequence:
    seq_id: int
    request_id: str
    index: int                       # which of the request's n completions
    prompt_token_ids: list[int]
    params: SamplingParams
    seed: int                        # the seed this completion draws with
    arrival: int                     # admission order; preemption takes the latest first
    token_ids: list[int] = field(default_factory=list)   # prompt + output
    status: SeqStatus = SeqStatus.WAITING
    num_computed: int = 0            # leading tokens whose KV is in the cache
    block_ids: list[int] = field(default_factory=list)
    block_hashes: list = field(default_factory=list)     # hash of each full, registered block
    finish_reason: str | None = None
    stop_reason: object = None
    logprobs: list = field(default_factory=list)
    num_preemptions: int = 0
    banned_ids: frozenset = frozenset()   # ids masked until min_tokens outputs exist (EOS, stop ids)
    error: str | None = None
    # detokenization state (see core/detokenizer.py)
    text: str = ""
    prefix_offset: int = 0
    read_offset: int = 0
    emitted_text_len: int = 0

    def __post_init__(self):
        if not self.token_ids:
            self.token_ids = list(self.prompt_token_ids)

    @property
    def num_prompt(self) -> int:
        return len(self.prompt_token_ids)

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def output_token_ids(self) -> list[int]:
        return self.token_ids[self.num_prompt:]

    @property
    def num_output(self) -> int:
        return len(self.token_ids) - self.num_prompt

    @property
    def is_finished(self) -> bool:
        return self.status is SeqStatus.FINISHED
