"""What generate() returns."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class CompletionOutput:
    index: int
    text: str
    token_ids: list[int]
    finish_reason: str | None       # "stop", "length", "abort", "error", or None while running
    logprobs: list[dict[int, float]] | None = None   # per token: {token_id: logprob}, sampled one included
    stop_reason: int | str | None = None             # the stop string or token id that ended it
    error: str | None = None

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None


@dataclass
class RequestOutput:
    request_id: str
    prompt: str | None
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput] = field(default_factory=list)
    finished: bool = False

    @property
    def text(self) -> str:
        """The first completion's text (LMDeploy-style ``pipe(...)[i].text``)."""
        return self.outputs[0].text if self.outputs else ""
