"""The FastAPI app: routes, the API key, admission (queue limit, draining), disconnects.

    app = build_app(engine, served_model_name="m", api_key=None, max_queued_requests=None)

``engine`` is an AsyncLLM (or anything with its interface: tests use fakes).
"""
from __future__ import annotations

import asyncio
import hmac
import time
import uuid

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response

from . import errors, params
from .chat import ChatFormat
from .completions import CompletionFormat
from .errors import APIError, error_body, shown
from .metrics import Metrics
from .protocol import ChatCompletionRequest, CompletionRequest, DetokenizeRequest, TokenizeRequest
from .responses import collect, stream
from .streaming import Run

RETRY_AFTER_S = 1


class Admission:
    """Sequences admitted and not yet ended.  Those beyond the engine's max_num_seqs are
    the waiting ones; counting them here (not in the engine thread, which lags) makes a
    burst of simultaneous requests see each other at once."""

    def __init__(self, max_num_seqs: int, max_queued: int | None):
        self.max_num_seqs, self.max_queued = max_num_seqs, max_queued
        self.in_flight = 0
        self.draining = False

    def admit(self, engine, num_seqs: int):
        if engine.dead is not None or not engine.is_running:
            raise APIError(503, "the engine has stopped; this server cannot serve requests", code="engine_dead")
        if self.draining:
            raise APIError(503, "the server is shutting down", code="shutting_down")
        waiting = self.in_flight + num_seqs - self.max_num_seqs
        if self.max_queued is not None and waiting > self.max_queued:
            raise APIError(503, f"too many requests waiting ({max(0, waiting - num_seqs)} queued; "
                                f"--max-queued-requests is {self.max_queued}); retry later",
                           code="queue_full", headers={"Retry-After": str(RETRY_AFTER_S)})
        self.in_flight += num_seqs
        released = False

        def release():
            nonlocal released
            if not released:
                released = True
                self.in_flight -= num_seqs
        return release


async def _until_disconnect(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _unless_disconnected(request: Request, coro):
    """Run coro; if the client goes away first, cancel it (which aborts its engine requests)."""
    work, watch = asyncio.ensure_future(coro), asyncio.ensure_future(_until_disconnect(request))
    try:
        await asyncio.wait({work, watch}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch.cancel()
        if not work.done():
            work.cancel()
    if work.cancelled():
        return Response(status_code=499)  # nobody reads it
    return work.result()


def build_app(engine, served_model_name: str, api_key: str | None = None,
              max_queued_requests: int | None = None, max_num_seqs: int | None = None,
              allowed_local_media_path: str | None = None) -> FastAPI:
    """allowed_local_media_path: the folder whose image files (paths, file:// URLs) chat
    requests may name; None: no local files.  http(s) image hosts: the engine's
    allowed_media_domains (--allowed-media-domains)."""
    app = FastAPI(title="halinfer", docs_url=None, redoc_url=None, openapi_url=None)
    errors.install(app)
    metrics = Metrics(engine)
    admission = Admission(max_num_seqs or engine.core.cfg.max_num_seqs, max_queued_requests)
    app.state.admission, app.state.metrics, app.state.engine = admission, metrics, engine
    created = int(time.time())

    async def authorized(request: Request) -> None:
        if api_key is None:
            return
        got = request.headers.get("authorization", "")
        scheme, _, key = got.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(key.strip().encode(), api_key.encode()):
            raise APIError(401, "missing or wrong API key: send 'Authorization: Bearer <key>'",
                           code="invalid_api_key")

    def check_model(name: str | None) -> None:
        if name is not None and name != served_model_name:
            raise APIError(404, f"model {shown(name)} is not served here; served: {served_model_name!r}",
                           param="model", code="model_not_found")

    async def run(request: Request, kind: str, body, prompts, sp, fmt_cls):
        release = admission.admit(engine, sp.n * len(prompts))
        rid = f"{kind}-{uuid.uuid4().hex}"
        r = Run(engine, metrics, rid, prompts, sp)
        fmt = fmt_cls(rid, served_model_name, engine.tokenizer, sp.logprobs, body.return_token_ids)
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            return stream(r, fmt, include_usage, release)
        try:
            return await _unless_disconnected(request, collect(r, fmt))
        finally:
            release()

    @app.get("/health")
    async def health():
        if engine.is_running:
            return {"status": "ok"}
        return JSONResponse(error_body(503, f"the engine loop has died: {engine.dead}", code="engine_dead"),
                            status_code=503)

    @app.get("/metrics")
    async def prometheus():
        return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/v1/models", dependencies=[Depends(authorized)])
    async def models():
        return {"object": "list", "data": [{"id": served_model_name, "object": "model", "created": created,
                                            "owned_by": "halinfer", "root": str(engine.model_dir),
                                            "max_model_len": engine.max_model_len}]}

    @app.post("/v1/completions", dependencies=[Depends(authorized)])
    async def completions(body: CompletionRequest, request: Request):
        check_model(body.model)
        sp = params.completion_params(engine, body)
        prompts = params.completion_prompts(engine, body)
        return await run(request, "cmpl", body, prompts, sp, CompletionFormat)

    @app.post("/v1/chat/completions", dependencies=[Depends(authorized)])
    async def chat(body: ChatCompletionRequest, request: Request):
        check_model(body.model)
        sp = params.chat_params(engine, body)
        msgs = params.chat_messages(body)
        images = []
        if any(isinstance(m["content"], list) for m in msgs):   # image parts: files, fetches, decoding
            msgs, images = await asyncio.to_thread(params.chat_images, engine, msgs, allowed_local_media_path)
        text, ids = params.chat_prompt(engine, msgs, body.add_generation_prompt)
        prompt = (text, ids)
        if images:
            try:
                ids, mm = await asyncio.to_thread(engine.inputs.multimodal_inputs, ids, {"image": images}, text)
            except (ValueError, TypeError) as e:
                raise APIError(400, f"bad image: {str(e)[:400]}", param="messages") from None
            prompt = (text, ids, mm)
        params.check_prompt(engine, ids, "messages")
        return await run(request, "chatcmpl", body, [prompt], sp, ChatFormat)

    @app.post("/tokenize", dependencies=[Depends(authorized)])
    async def tokenize(body: TokenizeRequest):
        check_model(body.model)
        if (body.prompt is None) == (body.messages is None):
            raise APIError(400, "give exactly one of prompt (text) or messages", param="prompt")
        if body.messages is not None:
            msgs = params.chat_messages(ChatCompletionRequest(messages=body.messages), images=False)
            _, ids = params.chat_prompt(engine, msgs, body.add_generation_prompt)
        else:
            ids = params.encode(engine, body.prompt, "prompt")
        return {"tokens": ids, "count": len(ids), "max_model_len": engine.max_model_len}

    @app.post("/detokenize", dependencies=[Depends(authorized)])
    async def detokenize(body: DetokenizeRequest):
        check_model(body.model)
        params.check_vocab(engine, body.tokens, "tokens")
        if engine.tokenizer is None:
            raise APIError(400, "this model has no tokenizer", param="tokens")
        return {"prompt": engine.tokenizer.decode(body.tokens)}

    return app
