"""A sequence: one prompt plus the tokens generated for it, and the rules that end it."""
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
    num_computed: int = 0            # leading tokens whose KV is in the cache (or queued to be)
    block_ids: list[int] = field(default_factory=list)
    block_hashes: list = field(default_factory=list)     # hash of each full, registered block
    finish_reason: str | None = None
    stop_reason: object = None
    num_preemptions: int = 0
    banned_ids: frozenset = frozenset()   # ids masked until min_tokens outputs exist (EOS, stop ids)
    error: str | None = None
    # The worker's view: the batch row ("slot") this sequence owns while running, whether
    # the worker has been told about it, and how many of block_ids it has been sent.
    slot: int = -1
    slot_fresh: bool = False
    blocks_sent: int = 0
    sampled_in_slot: bool = False     # the worker holds this sequence's last token on the device

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

    # -- the stop rules: the one place that decides whether a sequence goes on ------------
    def needs_token(self, max_model_len: int, in_flight: int = 0) -> bool:
        """Whether the sequence may draw another token once ``in_flight`` tokens still
        on their way (async scheduling) have arrived: max_tokens and the context bound."""
        p = self.params
        if p.max_tokens is not None and self.num_output + in_flight >= p.max_tokens:
            return False
        return self.num_tokens + in_flight < max_model_len

    def stop_after(self, tok: int, eos_ids, max_model_len: int) -> tuple[str, object] | None:
        """(finish_reason, stop_reason) once ``tok`` has been appended, or None to go on.

        EOS (unless ignore_eos) and stop_token_ids end it with "stop", once min_tokens
        outputs exist; running out of max_tokens or of context ends it with "length".
        The stop token stays in the output, as vLLM returns it.
        """
        p = self.params
        if self.num_output >= p.min_tokens and (tok in p.stop_token_ids or (not p.ignore_eos and tok in eos_ids)):
            return "stop", tok
        if not self.needs_token(max_model_len):
            return "length", None
        return None
