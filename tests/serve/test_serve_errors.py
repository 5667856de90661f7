"""Every error case over raw HTTP: its status, the OpenAI error shape, a message that names
the field and what is accepted, and never more than a bounded slice of the input."""
from __future__ import annotations

import httpx
import pytest

from conftest import API_KEY

from halinfer.serve.errors import MAX_SHOWN

CHAT = [{"role": "user", "content": "hi"}]


def assert_error(r: httpx.Response, status: int, *words: str, param: str | None = "skip") -> dict:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    msg = body["error"]["message"]
    assert isinstance(msg, str) and isinstance(body["error"]["type"], str)
    for w in words:
        assert w in msg, (w, msg)
    if param != "skip":
        assert body["error"]["param"] == param, body
    return body["error"]


@pytest.mark.parametrize("path,body,param,words", [
    ("/v1/completions", {"prompt": "x", "temperature": -1}, "temperature", ["temperature=-1", ">= 0"]),
    ("/v1/completions", {"prompt": "x", "max_tokens": 0}, "max_tokens", ["max_tokens=0", ">= 1"]),
    ("/v1/completions", {"prompt": "x", "n": 0}, "n", ["n=0", "[1, 256]"]),
    ("/v1/completions", {"prompt": "x", "logprobs": 21}, "logprobs", ["logprobs=21", "[0, 20]"]),
    ("/v1/completions", {"prompt": "x", "top_p": 0}, "top_p", ["top_p=0", "(0, 1]"]),
    ("/v1/completions", {"prompt": "x", "presence_penalty": 3}, "presence_penalty", ["[-2, 2]"]),
    ("/v1/completions", {"prompt": "x", "seed": -1}, "seed", ["seed=-1", "2**63"]),
    ("/v1/completions", {"prompt": "x", "temperature": "hot"}, "temperature", ["temperature", "number"]),
    ("/v1/completions", {"prompt": [1.5, 2]}, "prompt", ["prompt"]),
    ("/v1/completions", {"prompt": []}, "prompt", ["empty"]),
    ("/v1/completions", {"prompt": [5, 99999]}, "prompt", ["99999", "vocabulary [0, 512)"]),
    ("/v1/completions", {"max_tokens": 3}, "prompt", ["prompt is required"]),
    ("/v1/completions", {"prompt": "x", "echo": True}, "echo", ["echo"]),
    ("/v1/completions", {"prompt": "x", "logit_bias": {"5": 1}}, "logit_bias", ["logit_bias"]),
    ("/v1/chat/completions", {"messages": CHAT, "max_completion_tokens": 0}, "max_completion_tokens",
     ["max_completion_tokens=0", ">= 1"]),
    ("/v1/chat/completions", {"messages": CHAT, "logprobs": True, "top_logprobs": 21}, "top_logprobs",
     ["top_logprobs=21", "[0, 20]"]),
    ("/v1/chat/completions", {"messages": []}, "messages", ["empty"]),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, "messages",
     ["messages[0].content[0]", "needs its 'image_url' field"]),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": [{"type": "audio"}]}]}, "messages",
     ["'audio'", "'text' and 'image_url' parts are accepted"]),
])
def test_invalid_parameter_is_400(client, path, body, param, words):
    assert_error(client.post(path, json=body), 400, *words, param=param)


def test_prompt_longer_than_context_is_400(client):
    e = assert_error(client.post("/v1/completions", json={"prompt": [5] * 600}), 400, "600 tokens",
                     "max_model_len", "511", param="prompt")
    assert "[5, 5" not in e["message"]
    assert_error(client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "ab " * 600}]}),
                 400, "max_model_len", param="messages")


def test_malformed_json_is_400(client):
    r = client.post("/v1/completions", content=b'{"prompt": "x",', headers={"content-type": "application/json"})
    assert_error(r, 400, "malformed JSON")


def test_error_bodies_quote_only_a_bounded_slice_of_the_input(client):
    huge = "A" * 100_000
    for body in ({"prompt": "x", "temperature": huge}, {"prompt": "x", "model": huge},
                 {"prompt": "x", "stop": [huge, 5]}):
        r = client.post("/v1/completions", json=body)
        assert r.status_code in (400, 404)
        assert len(r.content) < 500 + MAX_SHOWN, len(r.content)


def test_unknown_model_is_404(client):
    assert_error(client.post("/v1/completions", json={"model": "gpt-9", "prompt": "x"}), 404, "'gpt-9'", "tiny",
                 param="model")
    assert_error(client.post("/v1/chat/completions", json={"model": "gpt-9", "messages": CHAT}), 404)


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": API_KEY}])
def test_missing_or_wrong_api_key_is_401(server, headers):
    for method, path, body in (("POST", "/v1/completions", {"prompt": "x"}), ("GET", "/v1/models", None),
                               ("POST", "/v1/chat/completions", {"messages": CHAT}),
                               ("POST", "/tokenize", {"prompt": "x"})):
        r = httpx.request(method, server.url + path, json=body, headers=headers, timeout=30)
        assert_error(r, 401, "API key")


def test_health_and_metrics_need_no_key(server):
    assert httpx.get(server.url + "/health", timeout=30).status_code == 200
    r = httpx.get(server.url + "/metrics", timeout=30)
    assert r.status_code == 200 and "halinfer_kv_blocks_total 1024.0" in r.text


def test_tokenize_and_detokenize_round_trip(client, offline):
    r = client.post("/tokenize", json={"prompt": "Hello world"}).json()
    assert r["tokens"] == offline.engine.encode("Hello world") and r["count"] == len(r["tokens"])
    assert client.post("/detokenize", json={"tokens": r["tokens"]}).json()["prompt"] == "Hello world"
    chat = client.post("/tokenize", json={"messages": CHAT}).json()
    assert chat["tokens"] == offline.engine.encode(offline.apply_chat_template(CHAT))
    assert_error(client.post("/detokenize", json={"tokens": [1, 100000]}), 400, "100000", param="tokens")
