"""Serving benchmark for any OpenAI-compatible server (in the manner of `vllm bench serve`).

    python benchmarks/serve.py --base-url http://127.0.0.1:8000 --max-concurrency 64
    python benchmarks/serve.py --base-url ... --request-rate 4          # Poisson arrivals, 4 req/s

Workload: DESIGN.md's offline-1000 lengths (numpy.random.default_rng(0): input lengths in
[50, 400], output lengths in [50, 350], token ids in [100, 120000)), streamed from
/v1/completions, greedy, ignore_eos, max_tokens = the drawn output length.  Prompts go as
token ids (--prompt-format ids) or as text "t<id> t<id> ..." (--prompt-format words) for the
peer harness's WordLevel tokenizer, where "t<id>" is token <id>: either way both servers see
the same prompt lengths.  Reports throughput (req/s, output tok/s) and TTFT, TPOT and ITL
(mean, p50, p90, p99, in ms) as a table and as one ``RESULT {json}`` line (and --out FILE).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

import httpx
import numpy as np


def workload(n: int, in_range, out_range, id_range, seed: int = 0):
    """DESIGN.md's offline-1000 draw (same order of draws as benchmarks/throughput.py)."""
    rng = np.random.default_rng(seed)
    in_lens = rng.integers(in_range[0], in_range[1] + 1, size=n)
    out_lens = rng.integers(out_range[0], out_range[1] + 1, size=n)
    prompts = [rng.integers(id_range[0], id_range[1], size=int(L)).tolist() for L in in_lens]
    return prompts, [int(x) for x in out_lens]


def as_prompt(ids: list[int], fmt: str):
    return ids if fmt == "ids" else " ".join(f"t{i}" for i in ids)


async def one_request(client: httpx.AsyncClient, url: str, model: str | None, prompt, max_tokens: int) -> dict:
    body = {"prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "ignore_eos": True, "stream": True,
            "stream_options": {"include_usage": True}}
    if model:
        body["model"] = model
    rec = {"ok": False, "ttft": None, "itl": [], "out_tokens": 0, "prompt_tokens": None, "error": None}
    t0 = time.perf_counter()
    last, chunks = None, 0
    try:
        async with client.stream("POST", url, json=body) as r:
            if r.status_code != 200:
                rec["error"] = f"HTTP {r.status_code}: {(await r.aread())[:200]!r}"
                return rec
            async for line in r.aiter_lines():
                if not line.startswith("data: "):
                    continue
                data = line[6:]
                if data == "[DONE]":
                    break
                ev = json.loads(data)
                if "error" in ev:
                    rec["error"] = str(ev["error"])[:200]
                    return rec
                now = time.perf_counter()
                if ev.get("choices"):
                    if last is None:
                        rec["ttft"] = now - t0
                    else:
                        rec["itl"].append(now - last)
                    last = now
                    chunks += 1
                if ev.get("usage"):
                    rec["out_tokens"] = ev["usage"]["completion_tokens"]
                    rec["prompt_tokens"] = ev["usage"]["prompt_tokens"]
    except (httpx.HTTPError, json.JSONDecodeError) as e:
        rec["error"] = f"{type(e).__name__}: {e}"[:200]
        return rec
    rec["latency"] = time.perf_counter() - t0
    rec["out_tokens"] = rec["out_tokens"] or chunks  # servers without usage in streams
    rec["ok"] = rec["ttft"] is not None
    return rec


def _pcts(xs, scale: float = 1000.0) -> dict:
    if not xs:
        return {"mean": None, "p50": None, "p90": None, "p99": None}
    a = np.asarray(xs) * scale
    return {"mean": float(a.mean()), "p50": float(np.percentile(a, 50)), "p90": float(np.percentile(a, 90)),
            "p99": float(np.percentile(a, 99))}


def summarize(recs: list[dict], wall: float, expected_out: list[int]) -> dict:
    ok = [r for r in recs if r["ok"]]
    out_tok = sum(r["out_tokens"] for r in ok)
    tpot = [(r["latency"] - r["ttft"]) / (r["out_tokens"] - 1) for r in ok if r["out_tokens"] > 1]
    wrong = sum(1 for r, want in zip(recs, expected_out) if r["ok"] and r["out_tokens"] != want)
    return {"completed": len(ok), "failed": len(recs) - len(ok), "wrong_output_len": wrong,
            "first_error": next((r["error"] for r in recs if r["error"]), None), "duration_s": wall,
            "request_throughput": len(ok) / wall, "output_throughput": out_tok / wall,
            "total_output_tokens": out_tok,
            "total_prompt_tokens_reported": sum(r["prompt_tokens"] or 0 for r in ok),
            "ttft_ms": _pcts([r["ttft"] for r in ok]), "tpot_ms": _pcts(tpot),
            "itl_ms": _pcts([x for r in ok for x in r["itl"]])}


async def run(args) -> dict:
    base = args.base_url.rstrip("/")
    prompts, outs = workload(args.num_prompts, args.input_len, args.output_len, args.token_range, args.seed)
    conc = args.max_concurrency or 1024
    limits = httpx.Limits(max_connections=conc + 8, max_keepalive_connections=conc + 8)
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    async with httpx.AsyncClient(timeout=httpx.Timeout(args.timeout), limits=limits, headers=headers) as client:
        model = args.model
        if model is None:
            model = (await client.get(base + "/v1/models")).json()["data"][0]["id"]
        url = base + "/v1/completions"
        for i in range(args.warmup):  # not measured: first-request compilation, caches
            await one_request(client, url, model, as_prompt(prompts[i], args.prompt_format), 8)
        sem = asyncio.Semaphore(conc)
        rng = np.random.default_rng(args.seed + 1)

        async def limited(i):
            async with sem:
                return await one_request(client, url, model, as_prompt(prompts[i], args.prompt_format), outs[i])

        tasks = []
        t0 = time.perf_counter()
        for i in range(len(prompts)):
            tasks.append(asyncio.create_task(limited(i)))
            if args.request_rate != float("inf"):
                await asyncio.sleep(float(rng.exponential(1.0 / args.request_rate)))
        recs = await asyncio.gather(*tasks)
        wall = time.perf_counter() - t0
    res = summarize(recs, wall, outs)
    res.update({"base_url": base, "model": model, "num_prompts": len(prompts),
                "request_rate": args.request_rate if np.isfinite(args.request_rate) else "inf",
                "max_concurrency": args.max_concurrency, "prompt_format": args.prompt_format,
                "label": args.label, "expected_output_tokens": sum(outs),
                "expected_prompt_tokens": sum(len(p) for p in prompts)})
    return res


def table(r: dict) -> str:
    rows = [("completed / failed", f"{r['completed']} / {r['failed']}"), ("duration (s)", f"{r['duration_s']:.2f}"),
            ("requests/s", f"{r['request_throughput']:.2f}"), ("output tok/s", f"{r['output_throughput']:.1f}")]
    for key in ("ttft_ms", "tpot_ms", "itl_ms"):
        p = r[key]
        if p["mean"] is not None:
            rows.append((key.replace("_ms", " (ms) mean/p50/p90/p99"),
                         " / ".join(f"{p[k]:.1f}" for k in ("mean", "p50", "p90", "p99"))))
    w = max(len(a) for a, _ in rows)
    return "\n".join(f"{a:<{w}}  {b}" for a, b in rows)


def _range(s: str):
    lo, hi = (int(x) for x in s.split(","))
    return lo, hi


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base-url", default="http://127.0.0.1:8000")
    p.add_argument("--model", default=None, help="default: the first of /v1/models")
    p.add_argument("--api-key", default=None)
    p.add_argument("--num-prompts", type=int, default=1000)
    g = p.add_mutually_exclusive_group()
    g.add_argument("--request-rate", type=float, default=float("inf"), help="Poisson arrivals per second (inf: all at once)")
    g.add_argument("--max-concurrency", type=int, default=None, help="requests in flight at most")
    p.add_argument("--input-len", type=_range, default=(50, 400), help="lo,hi (inclusive)")
    p.add_argument("--output-len", type=_range, default=(50, 350), help="lo,hi (inclusive)")
    p.add_argument("--token-range", type=_range, default=(100, 120000), help="lo,hi (hi exclusive)")
    p.add_argument("--prompt-format", choices=("ids", "words"), default="ids")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--warmup", type=int, default=4)
    p.add_argument("--timeout", type=float, default=600)
    p.add_argument("--label", default=None, help="a name for this run in the RESULT line")
    p.add_argument("--out", default=None, help="append the result as one JSON line to this file")
    a = p.parse_args(argv)
    res = asyncio.run(run(a))
    print(table(res))
    print("RESULT " + json.dumps(res), flush=True)
    if a.out:
        with open(a.out, "a") as f:
            f.write(json.dumps(res) + "\n")
    return 0 if res["failed"] == 0 and res["wrong_output_len"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
