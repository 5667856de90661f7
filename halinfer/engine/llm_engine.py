"""The synchronous front end: text in, RequestOutputs out, over one EngineCore.

Requests are owned by whoever added them: ``step()`` advances every request, and
each owner reads only its own (``output``/``take``), so a ``generate()`` never
swallows a stream's or an ``add_request`` caller's outputs.  Calls are serialized
by a lock, so threads may share one engine (each steps it in turn).
"""
from __future__ import annotations

import itertools
import threading

from ..core.config import EngineConfig
from .builder import build_engine
from .output_processor import OutputProcessor, RequestState
from .outputs import RequestOutput


class LLMEngine:
    def __init__(self, model: str, device: str = "auto", dtype="auto", quantization: str | None = None,
                 tensor_parallel_size: int = 1, load_format: str = "auto", tokenizer=None,
                 config: EngineConfig | None = None, executor: str = "inproc"):
        parts = build_engine(model, device, dtype, quantization, tensor_parallel_size, load_format, tokenizer,
                             config, executor)
        self.parts = parts
        self.core = parts.core
        self.inputs = parts.inputs
        self.tokenizer = parts.tokenizer
        self.outputs = OutputProcessor(parts.tokenizer)
        self.lock = threading.RLock()
        self._ids = itertools.count()

    # -- what tests, benchmarks and the CLI read ------------------------------------------
    backend = property(lambda self: self.parts.backend)
    device = property(lambda self: self.parts.device)
    dtype = property(lambda self: self.parts.dtype)
    model_dir = property(lambda self: self.parts.model_dir)
    model_config = property(lambda self: self.parts.model_config)
    block_size = property(lambda self: self.parts.block_size)
    max_model_len = property(lambda self: self.parts.max_model_len)
    load_seconds = property(lambda self: self.parts.load_seconds)
    vocab_size = property(lambda self: self.core.vocab_size)
    eos_ids = property(lambda self: self.core.eos_ids)
    scheduler = property(lambda self: self.core.scheduler)
    block_manager = property(lambda self: self.core.block_manager)
    stats = property(lambda self: self.core.stats)
    graphs = property(lambda self: self.core.executor.graphs)

    @property
    def worker(self):
        """The in-process worker (tests and benchmarks look inside it)."""
        w = getattr(self.core.executor, "worker", None)
        if w is None:
            raise AttributeError("the worker runs in another process (executor='mp')")
        return w

    runner = property(lambda self: self.worker.runner)
    runtime = property(lambda self: self.worker.runtime)
    model = property(lambda self: self.worker.model)

    # -- requests ---------------------------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        return self.inputs.encode(text)

    def add_request(self, prompt=None, params=None, prompt_token_ids=None, request_id: str | None = None) -> str:
        """Queue a request: a prompt (text, token ids, or a vLLM-style dict) or prompt_token_ids.
        Given both, a text prompt is kept for the output and the token ids are what runs (a
        chat template rendered and encoded by the caller)."""
        if prompt is None and prompt_token_ids is None:
            raise ValueError("give a prompt or prompt_token_ids")
        if prompt is not None and prompt_token_ids is not None:
            if not isinstance(prompt, str):
                raise ValueError("give a prompt or prompt_token_ids, not both (a text prompt may come with its ids)")
            prompt, prompt_token_ids = {"prompt": prompt, "prompt_token_ids": prompt_token_ids}, None
        with self.lock:
            rid = request_id if request_id is not None else f"req-{next(self._ids)}"
            if not isinstance(rid, str):
                raise TypeError(f"request_id must be a str, got {type(rid).__name__}")
            if rid in self.outputs.requests:
                raise ValueError(f"request id {rid!r} is already in use")
            src = prompt if prompt is not None else {"prompt_token_ids": prompt_token_ids}
            text, req = self.inputs.request(rid, src, params)
            self.core.add_request(req)
            self.outputs.add(RequestState(rid, text, req.prompt_token_ids, req.params))
            return rid

    def abort(self, request_id: str) -> None:
        """Stop a request and forget it (its blocks go back to the pool)."""
        with self.lock:
            self.core.abort(request_id)
            self.outputs.pop(request_id)

    def has_unfinished(self) -> bool:
        return self.core.has_unfinished()

    def step(self) -> set[str]:
        """One engine step; returns the ids of the requests whose output changed."""
        with self.lock:
            changed, stops = self.outputs.process(self.core.step())
            for rid, index, reason, stop in stops:
                self.core.finish_seq(rid, index, reason, stop)
            return changed

    def output(self, request_id: str) -> RequestOutput:
        return self.outputs.requests[request_id].output()

    def is_finished(self, request_id: str) -> bool:
        st = self.outputs.requests.get(request_id)
        return st is None or st.finished

    def take(self, request_id: str) -> RequestOutput:
        """The request's output, forgotten by the engine once finished."""
        with self.lock:
            st = self.outputs.requests[request_id]
            out = st.output()
            if st.finished:
                self.outputs.pop(request_id)
                self.core.abort(request_id)  # no-op unless the core still holds it
            return out

    def take_finished(self) -> list[RequestOutput]:
        """Every finished request's output (for callers that own all the requests)."""
        with self.lock:
            done = [r for r, st in self.outputs.requests.items() if st.finished]
            return [self.take(r) for r in done]

    def take_delta(self, request_id: str, index: int = 0) -> str:
        return self.outputs.take_delta(request_id, index)

    def prompt_logits(self, prompt_token_ids: list[int]):
        with self.lock:
            return self.core.prompt_logits(prompt_token_ids)

    def shutdown(self) -> None:
        self.core.shutdown()
