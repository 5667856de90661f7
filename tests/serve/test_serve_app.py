"""The app in-process over a fake engine: the failures a real tiny model cannot be made to
produce on demand (an engine error mid-stream, a dead engine loop)."""
from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from halinfer.engine.input_processor import InputProcessor
from halinfer.engine.outputs import CompletionOutput, RequestOutput
from halinfer.serve.app import build_app

TestClient = pytest.importorskip("fastapi.testclient").TestClient


class FakeEngine:
    """Token ids only (no tokenizer): each request yields two tokens, then what `ending` says."""

    def __init__(self, ending="error"):
        self.ending, self.dead, self.tokenizer = ending, None, None
        self.inputs = InputProcessor(None, vocab_size=100, max_model_len=64, model_name="fake")
        self.core = SimpleNamespace(vocab_size=100, cfg=SimpleNamespace(max_num_seqs=4))
        self.max_model_len, self.model_dir = 64, "/models/fake"
        self.num_running = self.num_waiting = self.kv_blocks_used = 0
        self.kv_blocks_total = 10

    @property
    def is_running(self):
        return self.dead is None

    async def generate(self, prompt, params, request_id=None):
        ids = prompt["prompt_token_ids"]

        def out(toks, reason=None, error=None):
            c = CompletionOutput(0, "".join(f"<{t}>" for t in toks), toks, reason, error=error)
            return RequestOutput(request_id, None, ids, [c], reason is not None)

        yield out([7])
        yield out([7, 8])
        if self.ending == "error":
            yield out([7, 8], "error", "RuntimeError: device fell over")
        else:
            yield out([7, 8, 9], "length")


def _sse_events(text: str) -> list:
    return [ln[6:] for ln in text.splitlines() if ln.startswith("data: ")]


def test_engine_error_mid_stream_is_a_final_error_chunk_then_done():
    c = TestClient(build_app(FakeEngine("error"), "fake"))
    r = c.post("/v1/completions", json={"prompt": [1, 2], "stream": True, "max_tokens": 5})
    assert r.status_code == 200
    events = _sse_events(r.text)
    assert events[-1] == "[DONE]"
    last = json.loads(events[-2])
    assert last["error"]["code"] == "engine_error" and "device fell over" in last["error"]["message"]
    assert [json.loads(e)["choices"][0]["text"] for e in events[:-2]] == ["<7>", "<8>"]


def test_engine_error_without_streaming_is_500_with_the_error_shape():
    c = TestClient(build_app(FakeEngine("error"), "fake"))
    r = c.post("/v1/completions", json={"prompt": [1, 2], "max_tokens": 5})
    assert r.status_code == 500
    assert "device fell over" in r.json()["error"]["message"]


def test_dead_engine_fails_health_and_refuses_requests_with_503():
    eng = FakeEngine("length")
    c = TestClient(build_app(eng, "fake"))
    assert c.get("/health").status_code == 200
    assert c.post("/v1/completions", json={"prompt": [1], "max_tokens": 3}).json()["usage"]["completion_tokens"] == 3
    eng.dead = RuntimeError("boom")
    h = c.get("/health")
    assert h.status_code == 503 and "boom" in h.json()["error"]["message"]
    r = c.post("/v1/completions", json={"prompt": [1], "max_tokens": 3})
    assert r.status_code == 503 and r.json()["error"]["code"] == "engine_dead"


def test_text_prompt_without_tokenizer_is_400():
    c = TestClient(build_app(FakeEngine("length"), "fake"))
    r = c.post("/v1/completions", json={"prompt": "words"})
    assert r.status_code == 400 and "no tokenizer" in r.json()["error"]["message"]
