"""Drive a Run to a response: one JSON body, or SSE chunks ending with ``data: [DONE]``.

A format (completions.py, chat.py) says how choices and deltas look; this file does what
both share: usage, the error chunk, and the order of events.
"""
from __future__ import annotations

import asyncio
import logging
import time

from fastapi.responses import StreamingResponse

from .errors import APIError, error_body, sse
from .streaming import Differ, Run, holdback_of

log = logging.getLogger("halinfer.serve")


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def token_text(tokenizer, tid: int) -> str:
    return tokenizer.decode([tid]) if tokenizer is not None else f"<{tid}>"


def top_items(entry: dict, k: int) -> list[tuple[int, float]]:
    """The k most likely (token id, logprob) of one position's {id: logprob}."""
    return sorted(entry.items(), key=lambda kv: -kv[1])[:k]


class Format:
    """What completions.py and chat.py share: ids, the model name, the body and chunk envelopes."""

    object = chunk_object = ""

    def __init__(self, request_id: str, model: str, tokenizer, num_logprobs: int | None,
                 return_token_ids: bool = False):
        self.id, self.model, self.tok, self.k = request_id, model, tokenizer, num_logprobs
        self.return_token_ids = return_token_ids
        self.created = int(time.time())

    def with_ids(self, choice: dict, ids: list[int]) -> dict:
        if self.return_token_ids:
            choice["token_ids"] = list(ids)
        return choice

    def body(self, choices: list[dict], usage: dict) -> dict:
        return {"id": self.id, "object": self.object, "created": self.created, "model": self.model,
                "choices": choices, "usage": usage}

    def chunk_base(self) -> dict:
        return {"id": self.id, "object": self.chunk_object, "created": self.created, "model": self.model}

    def first_chunk(self, index: int):
        return None


def _raise_failed(d) -> None:
    if d.finish_reason == "error":
        raise APIError(500, f"the engine failed on this request: {d.error}", code="engine_error")


async def collect(run: Run, fmt) -> dict:
    """The whole response body of a non-streaming request."""
    differ = Differ(run.n)
    choices: dict[int, list] = {}
    async for i, out in run.events():
        for d in differ.deltas(i, out):
            c = choices.setdefault(d.index, [[], [], [], None, None])
            c[0].append(d.text)
            c[1] += d.token_ids
            if d.logprobs is not None:
                c[2] += d.logprobs
            if d.finish_reason is not None:
                _raise_failed(d)
                c[3], c[4] = d.finish_reason, d.stop_reason
    body = [fmt.choice(idx, "".join(t), ids, lps if run.params.logprobs is not None else None, reason, stop)
            for idx, (t, ids, lps, reason, stop) in sorted(choices.items())]
    ntok = sum(len(c[1]) for c in choices.values())
    return fmt.body(body, usage(run.num_prompt_tokens, ntok))


class _Stream(StreamingResponse):
    """Calls on_close however the response ends (done, client gone, server stopping), even
    if the body generator never started: the admission count must never leak."""

    def __init__(self, body, on_close, **kw):
        super().__init__(body, **kw)
        self.on_close = on_close

    async def __call__(self, scope, receive, send):
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.on_close()


def stream(run: Run, fmt, include_usage: bool, on_close) -> StreamingResponse:
    return _Stream(_sse(run, fmt, include_usage), on_close, media_type="text/event-stream",
                   headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def _sse(run: Run, fmt, include_usage: bool):
    want_lp = run.params.logprobs is not None
    differ = Differ(run.n, holdback_of(run.params), with_tokens=want_lp)
    tokens: dict[int, int] = {}
    extra = {"usage": None} if include_usage else {}
    try:
        for idx in range(len(run.prompts) * run.n):
            first = fmt.first_chunk(idx)
            if first is not None:
                yield sse({**first, **extra})
        async for i, out in run.events():
            tokens[i] = sum(len(c.token_ids) for c in out.outputs)  # outputs are cumulative
            for d in differ.deltas(i, out):
                if d.finish_reason == "error":
                    raise APIError(500, f"the engine failed on this request: {d.error}", code="engine_error")
                yield sse({**fmt.chunk(d, want_lp), **extra})
        if include_usage:
            yield sse({**fmt.chunk_base(), "choices": [], "usage": usage(run.num_prompt_tokens, sum(tokens.values()))})
    except asyncio.CancelledError:
        raise
    except APIError as e:
        yield sse(error_body(e.status, e.message, e.param, e.code))
    except Exception as e:  # noqa: BLE001 - a failed stream ends with an error chunk, never silently
        log.exception("stream %s failed", run.request_id)
        yield sse(error_body(500, f"{type(e).__name__}: {str(e)[:300]}", code="engine_error"))
    yield "data: [DONE]\n\n"
