"""The front end's per-request output state: incremental text, stop strings, outputs.

The core sends TokenEvents (token ids only).  Here each completion's text grows
token by token (detokenizer.py), stop strings are searched in the newly added
text, and RequestOutputs are built.  A stop-string match finishes the completion
here and tells the caller which core sequences to stop.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

from . import detokenizer
from .outputs import CompletionOutput, RequestOutput

log = logging.getLogger("halinfer")


@dataclass(eq=False)
class CompletionState:
    index: int
    prompt_token_ids: list[int]
    token_ids: list[int] = field(default_factory=list)   # prompt + output (the detokenizer's window)
    text: str = ""
    prefix_offset: int = 0
    read_offset: int = 0
    logprobs: list = field(default_factory=list)
    finish_reason: str | None = None
    stop_reason: object = None
    error: str | None = None
    delta: str = ""              # text added since the owner last took it

    def __post_init__(self):
        self.token_ids = list(self.prompt_token_ids)

    @property
    def num_prompt(self) -> int:
        return len(self.prompt_token_ids)

    @property
    def output_token_ids(self) -> list[int]:
        return self.token_ids[self.num_prompt:]


class RequestState:
    def __init__(self, request_id: str, prompt: str | None, prompt_token_ids: list[int], params):
        self.request_id = request_id
        self.prompt = prompt
        self.prompt_token_ids = prompt_token_ids
        self.params = params
        self.completions = [CompletionState(j, prompt_token_ids) for j in range(params.n)]
        for c in self.completions:
            detokenizer.start(c)

    @property
    def finished(self) -> bool:
        return all(c.finish_reason is not None for c in self.completions)

    def output(self) -> RequestOutput:
        want_lp = self.params.logprobs is not None
        outs = [CompletionOutput(c.index, c.text, c.output_token_ids, c.finish_reason,
                                 list(c.logprobs) if want_lp else None, c.stop_reason, c.error)
                for c in self.completions]
        return RequestOutput(self.request_id, self.prompt, list(self.prompt_token_ids), outs, self.finished)


class OutputProcessor:
    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.requests: dict[str, RequestState] = {}

    def add(self, state: RequestState) -> None:
        self.requests[state.request_id] = state

    def process(self, events) -> tuple[set[str], list[tuple[str, int, str, object]]]:
        """Apply a step's events.  Returns (ids of the requests that changed, the
        completions the core must stop: (request_id, index, reason, stop_reason))."""
        changed, stops = set(), []
        for ev in events:
            req = self.requests.get(ev.request_id)
            if req is None:
                continue  # aborted by its owner meanwhile
            c = req.completions[ev.index]
            if c.finish_reason is not None:
                continue  # a stop string ended it; the core's later tokens are dropped
            changed.add(ev.request_id)
            if ev.token is None:  # the core finished it without a token (error)
                c.finish_reason, c.error = ev.finish_reason, ev.error
                continue
            try:
                stop = self._append(req, c, ev)
            except Exception as e:  # noqa: BLE001 - one request's failure must not end the others
                log.exception("request %s failed in output processing", ev.request_id)
                c.finish_reason, c.error = "error", f"{type(e).__name__}: {e}"
                stops.append((ev.request_id, ev.index, "error", None))
                continue
            if stop is not None:
                stops.append((ev.request_id, ev.index, "stop", stop))
        return changed, stops

    def _append(self, req: RequestState, c: CompletionState, ev):
        p = req.params
        c.token_ids.append(ev.token)
        if ev.logprobs is not None:
            c.logprobs.append(ev.logprobs)
        delta = detokenizer.step(self.tokenizer, c, p.skip_special_tokens)
        hit = None
        if p.stop and delta:
            # Search only where a stop string could newly end: the delta plus the longest stop's tail.
            window = max(len(s) for s in p.stop) + len(delta)
            start = max(0, len(c.text) - window)
            hits = [(c.text.find(s, start), s) for s in p.stop]
            hits = [(i, s) for i, s in hits if i >= 0]
            if hits:
                i, hit = min(hits)
                cut = len(c.text) - len(delta)
                delta = c.text[cut:i] if i >= cut else ""
                c.text = c.text[:i]
                c.finish_reason, c.stop_reason = "stop", hit
        if hit is None and ev.finish_reason is not None:
            c.finish_reason, c.stop_reason, c.error = ev.finish_reason, ev.stop_reason, ev.error
            delta += detokenizer.flush(self.tokenizer, c, p.skip_special_tokens)
        c.delta += delta
        return hit

    def take_delta(self, request_id: str, index: int = 0) -> str:
        c = self.requests[request_id].completions[index]
        d, c.delta = c.delta, ""
        return d

    def pop(self, request_id: str) -> RequestState | None:
        return self.requests.pop(request_id, None)
