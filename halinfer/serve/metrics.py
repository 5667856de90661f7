"""Prometheus metrics of one server (its own registry, so several apps can live in one
process, as in tests).

Gauges are read from the engine when /metrics is scraped.  Counters move once per engine
request (one per prompt of an API request), when it ends for whatever reason.
"""
from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# The worst of a request's completions names it: one failed completion fails the request.
_RANK = {"error": 4, "abort": 3, "length": 2, "stop": 1}
_LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_TPOT = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 1, 2.5)


class Metrics:
    def __init__(self, engine):
        r = self.registry = CollectorRegistry()
        for name, doc, fn in (
                ("halinfer_requests_running", "Sequences being generated", lambda: engine.num_running),
                ("halinfer_requests_waiting", "Sequences queued for a first step", lambda: engine.num_waiting),
                ("halinfer_kv_blocks_used", "KV blocks held by live requests (prefix-cache-only blocks are free)",
                 lambda: engine.kv_blocks_used),
                ("halinfer_kv_blocks_total", "KV blocks in the pool", lambda: engine.kv_blocks_total)):
            Gauge(name, doc, registry=r).set_function(fn)
        self.finished = Counter("halinfer_requests_finished", "Engine requests ended, by finish reason",
                                ["reason"], registry=r)
        self.prompt_tokens = Counter("halinfer_prompt_tokens", "Prompt tokens of ended requests", registry=r)
        self.generation_tokens = Counter("halinfer_generation_tokens", "Tokens generated", registry=r)
        self.ttft = Histogram("halinfer_time_to_first_token_seconds", "Arrival to first token", registry=r,
                              buckets=_LATENCY)
        self.tpot = Histogram("halinfer_time_per_output_token_seconds", "Mean time per token after the first",
                              registry=r, buckets=_TPOT)
        self.e2e = Histogram("halinfer_e2e_request_latency_seconds", "Arrival to end", registry=r,
                             buckets=_LATENCY)

    def request_done(self, num_prompt: int, last, t0: float, first: float | None) -> None:
        """last: the request's final RequestOutput (None if it produced none)."""
        now = time.monotonic()
        outs = last.outputs if last is not None else []
        reasons = [c.finish_reason or "abort" for c in outs] or ["abort"]
        reason = max(reasons, key=lambda x: _RANK.get(x, 0))
        ntok = sum(len(c.token_ids) for c in outs)
        self.finished.labels(reason=reason).inc()
        self.prompt_tokens.inc(num_prompt)
        self.generation_tokens.inc(ntok)
        self.e2e.observe(now - t0)
        if first is not None:
            self.ttft.observe(first - t0)
            per_seq = ntok / max(1, len(outs))
            if per_seq > 1:
                self.tpot.observe((now - first) / (per_seq - 1))

    def render(self) -> bytes:
        return generate_latest(self.registry)
