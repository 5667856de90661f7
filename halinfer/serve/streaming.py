"""One API request on the engine: its prompts run as engine requests side by side, their
cumulative outputs merged into one stream, and turned into per-choice deltas.

Cancelling the consumer (a client that disconnects) cancels every engine generator, and
AsyncLLM.generate aborts its request when cancelled, so the KV blocks are freed.
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

_END = object()


class Run:
    """The engine requests of one API request: (text, token ids) per prompt, or (text, token
    ids, processed images) for a chat with images; one SamplingParams."""

    def __init__(self, engine, metrics, request_id: str, prompts: list[tuple[str | None, list[int]]], params):
        self.engine, self.metrics, self.request_id = engine, metrics, request_id
        self.prompts, self.params = prompts, params
        self.n = params.n

    @property
    def num_prompt_tokens(self) -> int:
        return sum(len(p[1]) for p in self.prompts)

    async def events(self):
        """Yield (prompt index, cumulative RequestOutput) as outputs grow; raises what an
        engine generator raised."""
        q: asyncio.Queue = asyncio.Queue()
        tasks = [asyncio.ensure_future(self._pump(i, p[0], p[1], q, p[2] if len(p) > 2 else None))
                 for i, p in enumerate(self.prompts)]
        left = len(tasks)
        try:
            while left:
                item = await q.get()
                if item is _END:
                    left -= 1
                elif isinstance(item, BaseException):
                    raise item
                else:
                    yield item
        finally:
            for t in tasks:  # no await here: under a cancelled scope it would be interrupted
                t.cancel()

    async def _pump(self, i: int, text, ids: list[int], q: asyncio.Queue, mm=None) -> None:
        rid = self.request_id if len(self.prompts) == 1 else f"{self.request_id}-{i}"
        t0, first, last = time.monotonic(), None, None
        try:
            prompt = {"prompt": text, "prompt_token_ids": ids}
            if mm:
                prompt["mm_inputs"] = mm   # expanded ids and processed images (app.chat)
            async for out in self.engine.generate(prompt, self.params, request_id=rid):
                if first is None and any(c.token_ids for c in out.outputs):
                    first = time.monotonic()
                last = out
                q.put_nowait((i, out))
            q.put_nowait(_END)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - handed to the consumer, which reports it
            q.put_nowait(e)
        finally:
            self.metrics.request_done(len(ids), last, t0, first)


@dataclass
class Delta:
    index: int                     # the choice's index: prompt * n + completion
    text: str
    token_ids: list[int]
    logprobs: list[dict] | None
    finish_reason: str | None = None
    stop_reason: object = None
    error: str | None = None


@dataclass
class _Sent:
    text: int = 0
    tokens: int = 0
    done: bool = False


@dataclass
class Differ:
    """Cumulative outputs -> what each choice gained since the last call.

    With stop strings, the last (longest stop - 1) characters are held back until the
    choice ends: a stop string that spans tokens would otherwise be half sent before it
    matched (and the engine then cuts it from the text)."""

    n: int
    holdback: int = 0
    with_tokens: bool = True       # report token-only changes (logprobs ride on them)
    sent: dict = field(default_factory=dict)

    def deltas(self, i: int, out) -> list[Delta]:
        res = []
        for c in out.outputs:
            idx = i * self.n + c.index
            s = self.sent.setdefault(idx, _Sent())
            if s.done:
                continue
            end = len(c.text) if c.finished else max(s.text, len(c.text) - self.holdback)
            text, toks = c.text[s.text:end], c.token_ids[s.tokens:]
            if not c.finished and not text and not (toks and self.with_tokens):
                continue
            lps = c.logprobs[s.tokens:] if c.logprobs is not None else None
            s.text, s.tokens, s.done = end, len(c.token_ids), c.finished
            res.append(Delta(idx, text, list(toks), lps, c.finish_reason, c.stop_reason, c.error))
        return res


def holdback_of(params) -> int:
    return max((len(s) for s in params.stop), default=1) - 1
