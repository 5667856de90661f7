"""Startup, SIGTERM, and the default model, each on its own server process."""
from __future__ import annotations

import threading
import time

import httpx
import pytest


def test_startup_logs_device_model_kv_capacity_and_url(server, tiny_model):
    log = server.log()
    assert f"model {tiny_model}" in log and "on cpu" in log
    assert "KV cache 1024 blocks x 16 tokens = 16384 tokens" in log
    assert f"listening on {server.url}" in log


def test_sigterm_finishes_in_flight_requests_refuses_new_ones_and_exits_0(start_server, tiny_model):
    s = start_server(tiny_model, "--shutdown-timeout", "20")
    result = {}

    def long_request():
        body = {"prompt": "go", "max_tokens": 200, "temperature": 0, "ignore_eos": True}
        r = httpx.post(s.url + "/v1/completions", json=body, timeout=60)
        result["status"], result["body"] = r.status_code, r.json()

    t = threading.Thread(target=long_request)
    t.start()
    deadline = time.monotonic() + 30
    while "halinfer_requests_running 1.0" not in httpx.get(s.url + "/metrics", timeout=10).text:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    s.proc.terminate()
    assert s.proc.wait(60) == 0
    t.join(60)
    assert result["status"] == 200 and result["body"]["usage"]["completion_tokens"] == 200
    assert "refusing new requests" in s.log()
    with pytest.raises(httpx.ConnectError):
        httpx.get(s.url + "/health", timeout=5)


def test_sigterm_aborts_what_outlasts_the_grace_period(start_server, tiny_model):
    # one sequence at a time: four 500-token streams need several seconds, the grace is 1 s
    s = start_server(tiny_model, "--shutdown-timeout", "1", engine={"max_num_seqs": 1})
    got = []

    def stream():
        body = {"prompt": "go", "max_tokens": 500, "temperature": 0, "ignore_eos": True, "stream": True}
        try:
            with httpx.stream("POST", s.url + "/v1/completions", json=body, timeout=60) as r:
                got.append([ln for ln in r.iter_lines() if ln])
        except httpx.HTTPError:  # the connection closed under the stream
            got.append(None)

    threads = [threading.Thread(target=stream) for _ in range(4)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30
    while "halinfer_requests_running 1.0" not in httpx.get(s.url + "/metrics", timeout=10).text:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    t0 = time.monotonic()
    s.proc.terminate()
    assert s.proc.wait(30) == 0
    assert time.monotonic() - t0 < 15
    for t in threads:
        t.join(30)
    assert len(got) == 4
    finished = [g for g in got if g and any('"finish_reason": "length"' in ln for ln in g)]
    assert len(finished) < 4  # some were aborted at the end of the grace period, not run to the end


def test_default_model_answers_a_chat_over_http(start_server, smol_path):
    s = start_server(None, engine={"num_kv_blocks": 256, "max_model_len": 1024})
    r = httpx.post(s.url + "/v1/chat/completions", timeout=120,
                   json={"messages": [{"role": "user", "content": "What is the capital of France?"}],
                         "max_tokens": 16, "temperature": 0})
    assert r.status_code == 200, r.text
    body = r.json()
    assert "paris" in body["choices"][0]["message"]["content"].lower()
    assert body["usage"]["completion_tokens"] >= 1


def test_serve_without_model_or_default_says_what_to_do():
    from halinfer.default_model import default_model_path
    from halinfer.serve.cli import resolve_model

    assert resolve_model(None) == default_model_path(fetch=False) or resolve_model(None).endswith(".gguf")
    assert resolve_model("/some/dir") == "/some/dir"
