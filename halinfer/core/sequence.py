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
    # Set by the scheduler on admission (bind_limits), so the per-token checks are cheap.
    token_limit: int = 1 << 62        # total tokens (prompt + output) it may reach
    stop_ids: frozenset = frozenset()  # tokens that end it with "stop" (EOS unless ignored, stop ids)
    mm_inputs: list = field(default_factory=list)   # the prompt's images (core/mm_inputs.MMInput)

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
    def bind_limits(self, max_model_len: int, eos_ids) -> None:
        """Fix the bounds the stop rules read: the context, max_tokens, the stop ids."""
        p = self.params
        limit = max_model_len if p.max_tokens is None else min(max_model_len, self.num_prompt + p.max_tokens)
        self.token_limit = limit
        self.stop_ids = frozenset(p.stop_token_ids) | (frozenset() if p.ignore_eos else frozenset(eos_ids))

    def needs_token(self, max_model_len: int | None = None, in_flight: int = 0) -> bool:
        """Whether the sequence may draw another token once ``in_flight`` tokens still
        on their way (async scheduling) have arrived: max_tokens and the context bound
        (both folded into token_limit by bind_limits; max_model_len tightens it further)."""
        n = len(self.token_ids) + in_flight
        return n < self.token_limit and (max_model_len is None or n < max_model_len)

    def stop_after(self, tok: int) -> tuple[str, object] | None:
        """(finish_reason, stop_reason) once ``tok`` has been appended, or None to go on.

        EOS (unless ignore_eos) and stop_token_ids end it with "stop", once min_tokens
        outputs exist; running out of max_tokens or of context ends it with "length".
        The stop token stays in the output, as vLLM returns it.
        """
        if tok in self.stop_ids and len(self.token_ids) - len(self.prompt_token_ids) >= self.params.min_tokens:
            return "stop", tok
        if len(self.token_ids) >= self.token_limit:
            return "length", None
        return None
