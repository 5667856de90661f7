"""AsyncLLM: the asyncio front end.  The engine core steps in a background thread,
so requests are added, streamed and aborted while it runs.

    engine = AsyncLLM(model, device="cuda")           # the same keyword arguments as LLM
    async for out in engine.generate("Hello", SamplingParams(max_tokens=32), request_id="r1"):
        print(out.outputs[0].text)                     # cumulative, as vLLM's RequestOutput
    await engine.abort("r1"); engine.shutdown()

Threads: the core (token ids only) lives in its loop thread, which takes commands
(add / abort / finish) from a queue and hands each request's TokenEvents to its
asyncio queue.  Text (detokenizing, stop strings) is done on the asyncio side, in
the caller's event loop, by the output processor.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
import threading
from collections import defaultdict, deque

from ..core.engine_core import EngineCore
from .builder import build_engine
from .output_processor import OutputProcessor, RequestState

log = logging.getLogger("halinfer")


class EngineDeadError(RuntimeError):
    """The engine loop stopped on an error; no request can be served."""


class _Aborted:
    """Queue sentinel: the request was aborted by its owner."""


class AsyncLLM:
    def __init__(self, model: str | None = None, **kw):
        from ..llm import engine_kwargs

        eng_kw, cfg = engine_kwargs(**kw)
        self.parts = build_engine(model, config=cfg, **eng_kw)
        self.core: EngineCore = self.parts.core
        self.inputs = self.parts.inputs
        self.tokenizer = self.parts.tokenizer
        self.outputs = OutputProcessor(self.tokenizer)
        self._ids = itertools.count()
        self._cond = threading.Condition()
        self._cmds: deque = deque()
        self._queues: dict[str, tuple[asyncio.AbstractEventLoop, asyncio.Queue]] = {}
        self._stopping = False
        self.dead: BaseException | None = None
        self._thread = threading.Thread(target=self._loop, name="halinfer-engine", daemon=True)
        self._thread.start()

    # -- what servers read ------------------------------------------------------------------
    model_dir = property(lambda self: self.parts.model_dir)
    max_model_len = property(lambda self: self.parts.max_model_len)
    backend = property(lambda self: self.parts.backend)
    device = property(lambda self: self.parts.device)

    @property
    def is_running(self) -> bool:
        return self._thread.is_alive() and self.dead is None

    @property
    def num_running(self) -> int:
        return self.core.num_running

    @property
    def num_waiting(self) -> int:
        return self.core.num_waiting

    @property
    def kv_blocks_total(self) -> int:
        return self.core.block_manager.num_blocks

    @property
    def kv_blocks_used(self) -> int:
        """Blocks held by live requests (free blocks kept only for prefix reuse do not count)."""
        bm = self.core.block_manager
        return bm.num_blocks - bm.num_free

    # -- requests -----------------------------------------------------------------------------
    async def generate(self, prompt, sampling_params=None, request_id: str | None = None):
        """Yield the request's RequestOutput (cumulative) each time it gains tokens; the last
        has ``finished`` True.  Bad input raises ValueError/TypeError before anything runs;
        cancelling the consumer (or closing the generator) aborts the request."""
        if self.dead is not None:
            raise EngineDeadError(f"the engine loop died: {self.dead}")
        rid = request_id if request_id is not None else f"req-{next(self._ids)}"
        if rid in self._queues:
            raise ValueError(f"request id {rid!r} is already in use")
        text, req = self.inputs.request(rid, prompt, sampling_params)
        state = RequestState(rid, text, req.prompt_token_ids, req.params)
        q: asyncio.Queue = asyncio.Queue()
        self._queues[rid] = (asyncio.get_running_loop(), q)
        self.outputs.add(state)
        self._send(("add", req))
        try:
            while True:
                item = await q.get()
                if item is _Aborted:
                    return
                if isinstance(item, BaseException):
                    raise item
                changed, stops = self.outputs.process(item)
                for r, index, reason, stop in stops:
                    self._send(("finish", r, index, reason, stop))
                if changed:
                    yield state.output()
                if state.finished:
                    return
        finally:
            self._queues.pop(rid, None)
            self.outputs.pop(rid)
            if not state.finished:
                self._send(("abort", rid))

    async def abort(self, request_id: str) -> None:
        """Stop a request: its generate() ends, its blocks go back to the pool."""
        self._send(("abort", request_id))
        entry = self._queues.get(request_id)
        if entry is not None:
            entry[1].put_nowait(_Aborted)

    def shutdown(self, timeout: float = 30.0) -> None:
        """Stop the loop (in-flight requests are aborted) and the workers."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self._thread.join(timeout)
        self.core.shutdown()

    # -- the engine thread --------------------------------------------------------------------
    def _send(self, cmd) -> None:
        with self._cond:
            self._cmds.append(cmd)
            self._cond.notify()

    def _deliver(self, rid: str, item) -> None:
        entry = self._queues.get(rid)
        if entry is not None:
            loop, q = entry
            try:
                loop.call_soon_threadsafe(q.put_nowait, item)
            except RuntimeError:  # that event loop is closed: nobody is listening
                pass

    def _apply(self, cmd) -> None:
        kind = cmd[0]
        if kind == "add":
            req = cmd[1]
            try:
                self.core.add_request(req)
            except Exception as e:  # noqa: BLE001 - the request fails, the loop goes on
                self._deliver(req.request_id, e)
        elif kind == "abort":
            self.core.abort(cmd[1])
        elif kind == "finish":
            self.core.finish_seq(*cmd[1:])

    def _loop(self) -> None:
        try:
            while True:
                with self._cond:
                    while not self._cmds and not self._stopping and not self.core.has_unfinished():
                        self._cond.wait()
                    if self._stopping:
                        break
                    cmds, self._cmds = self._cmds, deque()
                for cmd in cmds:
                    self._apply(cmd)
                if not self.core.has_unfinished():
                    continue
                by_rid = defaultdict(list)
                for ev in self.core.step():
                    by_rid[ev.request_id].append(ev)
                for rid, evs in by_rid.items():
                    self._deliver(rid, evs)
        except BaseException as e:  # noqa: BLE001 - reported to every waiting request and /health
            log.exception("the engine loop died")
            self.dead = e
            for rid in list(self._queues):
                self._deliver(rid, EngineDeadError(f"the engine loop died: {type(e).__name__}: {e}"))
        finally:
            for rid in list(self.core.seqs):
                self.core.abort(rid)
            for rid in list(self._queues):
                self._deliver(rid, _Aborted if self.dead is None else EngineDeadError("the engine loop died"))
