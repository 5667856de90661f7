"""Concurrency, disconnects, exact metrics and overload, against server subprocesses."""
from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest

from conftest import API_KEY, metric

AUTH = {"Authorization": f"Bearer {API_KEY}"}
DEADLINE_S = 90  # no single scenario may take longer; a hang fails instead of blocking CI


async def _stream(c: httpx.AsyncClient, prompt, max_tokens: int) -> tuple[int, str | None, str]:
    """(completion tokens from usage, last finish_reason, text) of one streamed completion."""
    body = {"prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "ignore_eos": True, "stream": True,
            "stream_options": {"include_usage": True}}
    usage, reason, text = None, None, []
    async with c.stream("POST", "/v1/completions", json=body) as r:
        assert r.status_code == 200
        lines = [ln async for ln in r.aiter_lines() if ln.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    for ln in lines[:-1]:
        ev = json.loads(ln[6:])
        assert "error" not in ev, ev
        if ev["choices"]:
            text.append(ev["choices"][0]["text"])
            reason = ev["choices"][0]["finish_reason"] or reason
        else:
            usage = ev["usage"]["completion_tokens"]
    return usage, reason, "".join(text)


def test_64_concurrent_streams_finish_with_the_right_token_counts(server):
    lens = [4 + (i % 13) for i in range(64)]

    async def main():
        async with httpx.AsyncClient(base_url=server.url, headers=AUTH, timeout=DEADLINE_S) as c:
            return await asyncio.wait_for(
                asyncio.gather(*(_stream(c, [10 + i, 20 + i, 30], n) for i, n in enumerate(lens))), DEADLINE_S)

    results = asyncio.run(main())
    assert [u for u, _, _ in results] == lens
    assert all(reason == "length" for _, reason, _ in results)


def _idle(server, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        text = httpx.get(server.url + "/metrics", timeout=10).text
        if metric(text, "halinfer_kv_blocks_used") == 0 and metric(text, "halinfer_requests_running") == 0 \
                and metric(text, "halinfer_requests_waiting") == 0:
            return text
        assert time.monotonic() < deadline, f"not idle after {timeout}s:\n{text}"
        time.sleep(0.1)


def test_dropped_streams_are_aborted_and_free_their_blocks(server, client):
    _idle(server)

    async def drop_after_first_chunk(c, i):
        body = {"prompt": [40 + i] * 8, "max_tokens": 400, "temperature": 0, "ignore_eos": True, "stream": True}
        async with c.stream("POST", "/v1/completions", json=body) as r:
            async for ln in r.aiter_lines():
                if ln.startswith("data: "):
                    return  # leaving the block closes the connection mid-stream

    async def main():
        async with httpx.AsyncClient(base_url=server.url, headers=AUTH, timeout=DEADLINE_S) as c:
            await asyncio.wait_for(asyncio.gather(*(drop_after_first_chunk(c, i) for i in range(16))), DEADLINE_S)

    before = metric(httpx.get(server.url + "/metrics").text, "halinfer_requests_finished_total", 'reason="abort"')
    t0 = time.monotonic()
    asyncio.run(main())
    text = _idle(server, timeout=10)
    assert metric(text, "halinfer_requests_finished_total", 'reason="abort"') == before + 16
    assert time.monotonic() - t0 < 30  # 16 x 400 tokens were not generated to the end
    r = client.post("/v1/completions", json={"prompt": "still here", "max_tokens": 3, "temperature": 0})
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 3


def test_non_streaming_client_that_leaves_is_aborted(server):
    before = metric(_idle(server), "halinfer_requests_finished_total", 'reason="abort"')
    body = {"prompt": [7] * 8, "max_tokens": 450, "temperature": 0, "ignore_eos": True}
    with pytest.raises(httpx.TimeoutException):
        httpx.post(server.url + "/v1/completions", json=body, headers=AUTH, timeout=0.5)
    after = _idle(server, timeout=10)
    assert metric(after, "halinfer_requests_finished_total", 'reason="abort"') == before + 1


def test_counters_move_by_exactly_one_request_and_its_tokens(server, client):
    _idle(server)
    before = httpx.get(server.url + "/metrics").text
    r = client.post("/v1/completions", json={"prompt": [11, 12, 13, 14, 15], "max_tokens": 16,
                                            "temperature": 0, "ignore_eos": True})
    assert r.json()["usage"] == {"prompt_tokens": 5, "completion_tokens": 16, "total_tokens": 21}
    after = _idle(server)

    def delta(name, labels=""):
        return metric(after, name, labels) - metric(before, name, labels)

    assert delta("halinfer_requests_finished_total", 'reason="length"') == 1
    assert delta("halinfer_prompt_tokens_total") == 5
    assert delta("halinfer_generation_tokens_total") == 16
    for h in ("halinfer_time_to_first_token_seconds", "halinfer_time_per_output_token_seconds",
              "halinfer_e2e_request_latency_seconds"):
        assert delta(h + "_count") == 1, h
    assert metric(after, "halinfer_kv_blocks_total") == 1024


def test_overload_refuses_the_excess_with_503_and_the_rest_complete(start_server, tiny_model):
    s = start_server(tiny_model, "--max-queued-requests", "2", engine={"max_num_seqs": 2})

    async def one(c, i):
        body = {"prompt": [50 + i, 9, 9], "max_tokens": 24, "temperature": 0, "ignore_eos": True}
        r = await c.post("/v1/completions", json=body)
        return r.status_code, r.json(), r.headers.get("retry-after")

    async def main():
        async with httpx.AsyncClient(base_url=s.url, timeout=DEADLINE_S,
                                     limits=httpx.Limits(max_connections=64)) as c:
            return await asyncio.wait_for(asyncio.gather(*(one(c, i) for i in range(30))), DEADLINE_S)

    results = asyncio.run(main())
    ok = [b for st, b, _ in results if st == 200]
    refused = [(b, ra) for st, b, ra in results if st == 503]
    assert len(ok) + len(refused) == 30, [st for st, _, _ in results]
    assert 4 <= len(ok) < 30 and refused
    assert all(b["usage"]["completion_tokens"] == 24 and b["choices"][0]["finish_reason"] == "length" for b in ok)
    for b, retry_after in refused:
        assert b["error"]["code"] == "queue_full" and "--max-queued-requests is 2" in b["error"]["message"]
        assert retry_after is not None and int(retry_after) >= 1
    # once the burst is over, the server takes requests again
    r = httpx.post(s.url + "/v1/completions", json={"prompt": "x", "max_tokens": 2}, timeout=30)
    assert r.status_code == 200


def test_serving_benchmark_runs_against_the_server(server, capsys):
    import importlib.util
    import os

    from conftest import REPO

    spec = importlib.util.spec_from_file_location("bench_serve", os.path.join(REPO, "benchmarks", "serve.py"))
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    rc = bench.main(["--base-url", server.url, "--api-key", API_KEY, "--num-prompts", "12", "--max-concurrency", "4",
                     "--input-len", "5,30", "--output-len", "3,12", "--token-range", "3,500", "--warmup", "1"])
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("RESULT "))
    res = json.loads(line[7:])
    assert rc == 0 and res["completed"] == 12 and res["wrong_output_len"] == 0
    assert res["total_output_tokens"] == res["expected_output_tokens"]
    assert res["total_prompt_tokens_reported"] == res["expected_prompt_tokens"]
    assert res["ttft_ms"]["p99"] >= res["ttft_ms"]["p50"] > 0
