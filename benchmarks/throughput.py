"""Throughput benchmark: the DESIGN.md workloads on any HF config with random weights.

    python benchmarks/throughput.py --model llama3-8b --device cuda --workload all --peer hf --out run.json

--model takes a preset name (benchmarks/configs/<name>.json), a config.json, or a
model directory.  Weights are random (load_format="dummy"): no checkpoint needed;
--load-format auto reads a model directory's own weights instead (benchmarks/peer_quant.sh
does, so halinfer runs the quantized tensors LMDeploy reads).

decode-b1     one prompt of 128 random token ids, 256 new tokens, greedy, ignore EOS.
              Reports ms/token and tok/s of the decode phase, time to first token, and
              the roofline: weight bytes read per token / measured copy bandwidth.
offline-1000  1000 requests from numpy.random.default_rng(0): input lengths in [50, 400],
              output lengths in [50, 350], token ids in [100, 120000); all submitted at
              once, greedy, ignore EOS.  A first pass after a short warm-up, then a second
              pass (steady state).  Reports wall s, output tok/s, total tok/s, req/s.
--quantization awq|gptq|gptq-act|w8a8|fp8   random weights in that published format (AWQ/GPTQ 4-bit
              group 128, gptq-act with an act-order g_idx, compressed-tensors W8A8 int8, block-scaled FP8 128x128): the
              config gets the format's quantization_config, so the real loading path runs.
              W8A8 / FP8 fuse each eligible RMSNorm with the next linears' activation
              quantization (result key fused_norm_quant: how many); HALINFER_FUSE_NORM_QUANT=0
              in the environment times the unfused path.
--kv-cache-dtype auto|int8|int4|fp8   the KV cache's storage.
--profile-kernels N   offline: profile the steady pass's device kernels (torch.profiler, CUDA
              activity only) and report the N largest by total time, with launches: where two
              runs (e.g. --kv-cache-dtype auto / int4) spend their time differently.  The pass's
              wall time is then not a benchmark figure.
--peer hf     runs HF transformers generate() on the same workloads in the same run
              (offline: on the first --hf-requests requests, batched by --hf-batch) so
              every figure comes with its ratio.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import sys
import tempfile
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))


# -- workloads -------------------------------------------------------------------------
def decode_b1_workload(vocab: int):
    rng = np.random.default_rng(1)
    return [rng.integers(100, min(120000, vocab), size=128).tolist()], [256]


def offline_workload(n: int = 1000, vocab: int = 128256):
    rng = np.random.default_rng(0)
    in_lens = rng.integers(50, 401, size=n)
    out_lens = rng.integers(50, 351, size=n)
    hi = min(120000, vocab)
    prompts = [rng.integers(100, hi, size=int(L)).tolist() for L in in_lens]
    return prompts, out_lens.tolist()


def long_and_prefix_workloads(want: set[str], vocab: int):
    """The peer harness's extra workloads, drawn in its order from one generator (seed 7):
    long: a warm-up prompt, then 3 reps of (a 7,680-token prompt for TTFT with 1 new token, another
    with 128 new tokens); prefix: one 2,048-token prefix and 200 requests of it + 64 own tokens."""
    rng, hi = np.random.default_rng(7), min(120000, vocab)
    draw = lambda n: rng.integers(100, hi, size=n).tolist()  # noqa: E731
    out = {}
    if "long" in want:
        warm = draw(7680)
        out["long"] = (warm, [(draw(7680), draw(7680)) for _ in range(3)])
    if "prefix" in want:
        prefix = draw(2048)
        out["prefix"] = (prefix, [prefix + draw(64) for _ in range(200)])
    return out


# -- setup -----------------------------------------------------------------------------
def model_dir_for(spec: str) -> tuple[str, bool]:
    """(directory holding config.json, is_temporary)."""
    preset = os.path.join(HERE, "configs", f"{spec}.json")
    path = preset if os.path.isfile(preset) else spec
    if os.path.isdir(path):
        return path, False
    if not os.path.isfile(path):
        sys.exit(f"--model {spec!r}: not a preset in benchmarks/configs, a config.json, or a model directory")
    d = tempfile.mkdtemp(prefix="halinfer-bench-")
    shutil.copy(path, os.path.join(d, "config.json"))
    return d, True


QUANT_CONFIGS = {
    "awq": {"quant_method": "awq", "bits": 4, "group_size": 128, "version": "gemm", "zero_point": True},
    "gptq": {"quant_method": "gptq", "bits": 4, "group_size": 128, "desc_act": False, "sym": True,
             "checkpoint_format": "gptq"},
    # act-order: dummy init gives g_idx a random permutation of the groups (GptqMethod.after_dummy_init)
    "gptq-act": {"quant_method": "gptq", "bits": 4, "group_size": 128, "desc_act": True, "sym": True,
                 "checkpoint_format": "gptq"},
    "w8a8": {"quant_method": "compressed-tensors", "format": "int-quantized", "ignore": ["lm_head"],
             "config_groups": {"group_0": {"targets": ["Linear"], "format": "int-quantized",
                                           "weights": {"num_bits": 8, "type": "int", "symmetric": True,
                                                       "strategy": "channel"},
                                           "input_activations": {"num_bits": 8, "type": "int", "symmetric": True,
                                                                 "strategy": "token", "dynamic": True}}}},
    "fp8": {"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic", "weight_block_size": [128, 128]},
}


def with_quantization(model_dir: str, temp: bool, method: str) -> tuple[str, bool]:
    """A config directory like model_dir's whose config.json declares ``method``'s format."""
    d = tempfile.mkdtemp(prefix="halinfer-bench-q-")
    with open(os.path.join(model_dir, "config.json")) as f:
        cfg = json.load(f)
    cfg["quantization_config"] = QUANT_CONFIGS[method]
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f)
    if temp:
        shutil.rmtree(model_dir, ignore_errors=True)
    return d, True


def copy_bandwidth(runtime, nbytes: int = 1 << 30, reps: int = 20) -> float:
    """Device-to-device copy bandwidth, bytes read + written per second (median of reps)."""
    a = torch.empty(nbytes // 2, dtype=torch.bfloat16, device=runtime.device).normal_()
    b = torch.empty_like(a)
    times = []
    for _ in range(reps + 3):
        runtime.synchronize()
        t = time.perf_counter()
        b.copy_(a)
        runtime.synchronize()
        times.append(time.perf_counter() - t)
    del a, b
    return 2 * nbytes / float(np.median(times[3:]))


def weight_bytes_per_token(model) -> int:
    """Bytes of weights a decode step must read: everything but the embedding table
    (one row of it is read) — the lm_head counts, tied or not."""
    total = sum(p.numel() * p.element_size() for p in model.parameters())
    emb = model.model.embed_tokens.weight
    if model.lm_head.weight is not emb:
        total -= emb.numel() * emb.element_size()
    return total


# -- halinfer ------------------------------------------------------------------------------
def run_halinfer(args, model_dir):
    from halinfer import LLM, SamplingParams

    kw = dict(device=args.device, dtype=args.dtype, load_format=args.load_format, max_num_seqs=args.max_num_seqs,
              enforce_eager=args.enforce_eager, gpu_memory_utilization=args.gpu_memory_utilization,
              enable_prefix_caching=not args.no_prefix_caching, kv_cache_dtype=args.kv_cache_dtype,
              scheduling_policy=args.scheduling_policy, prefill_interval=args.prefill_interval)
    if args.max_model_len:
        kw["max_model_len"] = args.max_model_len
    if args.max_num_batched_tokens:
        kw["max_num_batched_tokens"] = args.max_num_batched_tokens
    t0 = time.perf_counter()
    llm = LLM(model_dir, **kw)
    eng = llm.engine
    be, dev, rt = eng.backend, eng.device, eng.runtime
    res = {"engine": "halinfer", "device": str(dev), "backend": be.name, "graphs": eng.graphs,
           "startup_s": round(time.perf_counter() - t0, 2), "kv_blocks": eng.block_manager.num_blocks,
           "block_size": eng.block_size, "max_num_seqs": eng.core.cfg.max_num_seqs}
    try:   # norms / gated MLPs fused with the next linears' activation quantization (HALINFER_FUSE_NORM_QUANT=0: none)
        from halinfer.models.norm_quant_plan import fused_mlps, fused_norms
        res["fused_norm_quant"] = len(fused_norms(eng.model))
        res["fused_mlp_quant"] = len(fused_mlps(eng.model))
    except AttributeError:   # the model lives in worker processes
        pass
    vocab = eng.vocab_size

    want = workloads(args.workload)
    if "decode-b1" in want:
        bw = copy_bandwidth(rt)
        wbytes = weight_bytes_per_token(eng.model)
        roof = bw / wbytes
        prompts, outs = decode_b1_workload(vocab)
        sp = SamplingParams(temperature=0, max_tokens=outs[0], ignore_eos=True)
        llm.generate(prompt_token_ids=prompts, sampling_params=SamplingParams(temperature=0, max_tokens=16,
                     ignore_eos=True), use_tqdm=False)  # warm-up
        rt.reset_peak_memory()
        times = []
        eng.add_request(None, sp, prompts[0])
        rt.synchronize()
        t = time.perf_counter()
        while eng.has_unfinished():
            eng.step()
            times.append(time.perf_counter() - t)  # each step returns after its token reached the host
        eng.take_finished()
        ttft = times[0]
        decode_s = times[-1] - times[0]
        n_dec = len(times) - 1
        ms_tok = 1000 * decode_s / n_dec
        res["decode-b1"] = {
            "ttft_ms": round(1000 * ttft, 2), "ms_per_token": round(ms_tok, 3),
            "tok_per_s": round(1000 / ms_tok, 1), "end_to_end_s": round(times[-1], 3),
            "copy_bandwidth_GBps": round(bw / 1e9, 1), "weight_bytes": wbytes,
            "roofline_tok_per_s": round(roof, 1), "roofline_fraction": round((1000 / ms_tok) / roof, 3),
            "peak_memory_GiB": round(rt.max_memory_allocated() / 2**30, 2),
        }
        print(json.dumps({"decode-b1": res["decode-b1"]}), flush=True)

    if "offline-1000" in want:
        prompts, outs = offline_workload(args.num_requests, vocab)
        sps = [SamplingParams(temperature=0, max_tokens=int(o), ignore_eos=True) for o in outs]
        llm.generate(prompt_token_ids=prompts[:8], sampling_params=sps[:8], use_tqdm=False)  # warm-up
        n_in, n_out = sum(map(len, prompts)), sum(outs)
        for name in ("first_pass", "steady"):
            eng.block_manager.reset_prefix_cache()  # passes must not reuse each other's KV
            rt.reset_peak_memory()
            rt.synchronize()
            prof = kernel_profiler(dev.type) if args.profile_kernels and name == "steady" else None
            t = time.perf_counter()
            first_token_at: dict[str, float] = {}
            stats0 = dict(eng.stats)
            for p_, sp in zip(prompts, sps):
                eng.add_request(None, sp, p_)
            spent = {"prefill_s": 0.0, "decode_s": 0.0}
            while eng.has_unfinished():
                before = eng.stats["prefill_steps"]
                t_step = time.perf_counter()
                changed = eng.step()   # ids of the requests that gained tokens
                now = time.perf_counter() - t
                # Host time of the call, by the kind of step it launched (with async scheduling a
                # decode call mostly waits for the step launched before it).
                spent["prefill_s" if eng.stats["prefill_steps"] > before else "decode_s"] += \
                    time.perf_counter() - t_step
                for rid in changed:
                    first_token_at.setdefault(rid, now)
            rt.synchronize()
            wall = time.perf_counter() - t
            if prof is not None:
                prof.__exit__(None, None, None)
                res["kernels_steady"] = kernel_totals(prof, args.profile_kernels)
            done = eng.take_finished()
            got = sum(len(o.outputs[0].token_ids) for o in done)
            assert got == n_out, f"expected {n_out} output tokens, got {got}"
            res[f"offline-{args.num_requests}/{name}"] = {
                "wall_s": round(wall, 2), "output_tok_per_s": round(n_out / wall, 1),
                "total_tok_per_s": round((n_in + n_out) / wall, 1), "req_per_s": round(len(prompts) / wall, 2),
                "input_tokens": n_in, "output_tokens": n_out,
                "mean_ttft_s": round(float(np.mean(list(first_token_at.values()))), 3),
                "preemptions": eng.scheduler.num_preemptions,
                "peak_memory_GiB": round(rt.max_memory_allocated() / 2**30, 2),
                "steps": {k: eng.stats[k] - stats0[k] for k in eng.stats},
                "step_time_s": {k: round(v, 2) for k, v in spent.items()},
            }
            print(json.dumps({name: res[f"offline-{args.num_requests}/{name}"]}), flush=True)
    extra = long_and_prefix_workloads(want, vocab)
    if "long" in extra:
        warm, reps = extra["long"]
        timed_request(eng, warm, 8)
        runs = []
        for ids, ids2 in reps:
            ttft, _ = timed_request(eng, ids, 1)
            tot, n = timed_request(eng, ids2, 128)
            runs.append((ttft, tot, n))
        ttft = min(r[0] for r in runs)
        tot, n = min((r[1], r[2]) for r in runs)
        res["long_7680"] = {"ttft_ms": round(ttft * 1e3, 1), "e2e_s": round(tot, 3),
                            "decode_tok_s": round((n - 1) / (tot - ttft), 1),
                            "reps": [[round(a * 1e3, 1), round(b, 3), c] for a, b, c in runs]}
        print(json.dumps({"long_7680": res["long_7680"]}), flush=True)
    if "prefix" in extra:
        prefix, reqs = extra["prefix"]
        timed_request(eng, prefix + [5] * 8, 4)   # the prefix is seen once before timing
        sp = SamplingParams(temperature=0, max_tokens=64, ignore_eos=True)
        rt.synchronize()
        t = time.perf_counter()
        for r in reqs:
            eng.add_request(None, sp, r)
        while eng.has_unfinished():
            eng.step()
        dt = time.perf_counter() - t
        got = sum(len(o.outputs[0].token_ids) for o in eng.take_finished())
        res["shared_prefix_200x2048"] = {"seconds": round(dt, 3), "output_tokens": got,
                                         "req_s": round(len(reqs) / dt, 2),
                                         "prefix_caching": not args.no_prefix_caching}
        print(json.dumps({"shared_prefix_200x2048": res["shared_prefix_200x2048"]}), flush=True)
    del llm, eng
    gc.collect()
    rt.empty_cache()
    return res


def kernel_profiler(device_type: str):
    """A started torch.profiler recording device activity only (CPU ops would swamp a pass); on
    the CPU backend its ops, so the option can be tried anywhere."""
    from torch.profiler import ProfilerActivity, profile

    prof = profile(activities=[ProfilerActivity.CUDA if device_type == "cuda" else ProfilerActivity.CPU])
    prof.__enter__()
    return prof


def kernel_totals(prof, rows: int) -> list[dict]:
    """The ``rows`` device kernels with the most total time: name, launches, ms; printed too."""
    out = []
    for e in prof.key_averages():
        us = getattr(e, "self_device_time_total", 0.0) or getattr(e, "self_cpu_time_total", 0.0)
        if us > 0:
            out.append({"name": e.key[:120], "launches": e.count, "ms": round(us / 1e3, 2)})
    out.sort(key=lambda r: -r["ms"])
    total = sum(r["ms"] for r in out)
    print(f"device kernels, steady pass: {total:.1f} ms in all", flush=True)
    for r in out[:rows]:
        print(f"  {r['ms']:10.2f} ms {r['launches']:8d}x  {r['name']}", flush=True)
    return [{"name": "(all)", "launches": sum(r["launches"] for r in out), "ms": round(total, 2)}] + out[:rows]


def timed_request(eng, ids: list[int], n: int) -> tuple[float, int]:
    """Seconds from submitting one request until its n-th token is on the host, and tokens got."""
    from halinfer import SamplingParams

    eng.runtime.synchronize()
    t = time.perf_counter()
    eng.add_request(None, SamplingParams(temperature=0, max_tokens=n, ignore_eos=True), ids)
    while eng.has_unfinished():
        eng.step()
    dt = time.perf_counter() - t
    return dt, sum(len(o.outputs[0].token_ids) for o in eng.take_finished())


WORKLOADS = ("decode-b1", "offline-1000", "long", "prefix")


def workloads(spec: str) -> set[str]:
    """--workload: a comma list of WORKLOADS; "all" is decode-b1 and offline-1000 (the default pair)."""
    want = set()
    for w in spec.split(","):
        if w == "all":
            want |= {"decode-b1", "offline-1000"}
        elif w in WORKLOADS:
            want.add(w)
        else:
            raise SystemExit(f"--workload: unknown {w!r}; known: all, {', '.join(WORKLOADS)} (comma-separated)")
    return want


# -- HF transformers peer ----------------------------------------------------------------------
def run_hf(args, model_dir, device):
    from transformers import AutoConfig, AutoModelForCausalLM

    from halinfer.core.config import parse_dtype

    dtype = parse_dtype(args.dtype if args.dtype != "auto" else "bfloat16")
    cfg = AutoConfig.from_pretrained(model_dir)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(cfg, dtype=dtype).eval()
    res = {"engine": f"transformers {__import__('transformers').__version__}"}
    sync = (lambda: torch.cuda.synchronize()) if device.type == "cuda" else (lambda: None)

    def gen(batch, n):
        return model.generate(batch, attention_mask=(batch != 0).long(), max_new_tokens=n, min_new_tokens=n,
                              do_sample=False, pad_token_id=0)

    if "decode-b1" in workloads(args.workload):
        prompts, outs = decode_b1_workload(cfg.vocab_size)
        ids = torch.tensor(prompts, device=device)
        gen(ids, 4)
        sync()
        t = time.perf_counter()
        gen(ids, 1)
        sync()
        ttft = time.perf_counter() - t
        t = time.perf_counter()
        gen(ids, outs[0])
        sync()
        total = time.perf_counter() - t
        ms_tok = 1000 * (total - ttft) / (outs[0] - 1)
        res["decode-b1"] = {"ttft_ms": round(1000 * ttft, 2), "ms_per_token": round(ms_tok, 3),
                            "tok_per_s": round(1000 / ms_tok, 1)}
        print(json.dumps({"hf decode-b1": res["decode-b1"]}), flush=True)

    if "offline-1000" in workloads(args.workload) and args.hf_requests > 0:
        prompts, outs = offline_workload(args.num_requests, cfg.vocab_size)
        prompts, outs = prompts[:args.hf_requests], outs[:args.hf_requests]
        sync()
        t = time.perf_counter()
        for i in range(0, len(prompts), args.hf_batch):
            ps, os_ = prompts[i:i + args.hf_batch], outs[i:i + args.hf_batch]
            L = max(map(len, ps))
            batch = torch.tensor([[0] * (L - len(p)) + p for p in ps], device=device)  # left padding
            gen(batch, max(os_))  # HF generates to the longest; only the requested tokens count
        sync()
        wall = time.perf_counter() - t
        n_out = sum(outs)
        res[f"offline-subset-{len(prompts)}"] = {"wall_s": round(wall, 2), "output_tok_per_s": round(n_out / wall, 1),
                                                "requests": len(prompts), "batch": args.hf_batch}
        print(json.dumps({"hf offline subset": res[f"offline-subset-{len(prompts)}"]}), flush=True)
    del model
    gc.collect()
    return res


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="llama3-8b")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--workload", default="all",
                   help="comma list of decode-b1, offline-1000, long, prefix; all = decode-b1,offline-1000")
    p.add_argument("--num-requests", type=int, default=1000)
    p.add_argument("--max-num-seqs", type=int, default=None, help="default: the engine's for the device")
    p.add_argument("--max-num-batched-tokens", type=int, default=None)
    p.add_argument("--max-model-len", type=int, default=None)
    p.add_argument("--gpu-memory-utilization", type=float, default=0.85)
    p.add_argument("--enforce-eager", action="store_true")
    p.add_argument("--scheduling-policy", default="separate", choices=("separate", "mixed"))
    p.add_argument("--prefill-interval", type=int, default=16)
    p.add_argument("--no-prefix-caching", action="store_true")
    p.add_argument("--peer", choices=("none", "hf"), default="none")
    p.add_argument("--hf-requests", type=int, default=64)
    p.add_argument("--hf-batch", type=int, default=32)
    p.add_argument("--load-format", default="dummy", choices=("dummy", "auto"),
                   help="auto: read the model directory's weights (its quantization_config's format)")
    p.add_argument("--quantization", default=None, choices=tuple(QUANT_CONFIGS))
    p.add_argument("--kv-cache-dtype", default="auto", choices=("auto", "int8", "int4", "fp8"))
    p.add_argument("--profile-kernels", type=int, default=0, metavar="N",
                   help="offline: profile the steady pass, report the N largest kernels")
    p.add_argument("--out", default=None, help="write the JSON result here")
    args = p.parse_args(argv)

    model_dir, temp = model_dir_for(args.model)
    if args.load_format == "auto" and (temp or args.quantization):
        p.error("--load-format auto reads a model directory's weights: give --model a directory, "
                "without --quantization (the directory's config.json names its format)")
    if args.quantization:
        model_dir, temp = with_quantization(model_dir, temp, args.quantization)
    try:
        result = {"model": args.model, "date": time.strftime("%Y-%m-%d"), "args": vars(args)}
        result["halinfer"] = run_halinfer(args, model_dir)
        if args.peer == "hf":
            result["hf"] = run_hf(args, model_dir, torch.device(result["halinfer"]["device"]))
            ratios = {}
            for k in ("decode-b1",):
                if k in result["hf"] and k in result["halinfer"]:
                    ratios[k] = round(result["halinfer"][k]["tok_per_s"] / result["hf"][k]["tok_per_s"], 2)
            sub = [k for k in result["hf"] if k.startswith("offline-subset")]
            mine = result["halinfer"].get(f"offline-{args.num_requests}/steady")
            if sub and mine:
                ratios["offline (output tok/s, halinfer full run / HF subset)"] = round(
                    mine["output_tok_per_s"] / result["hf"][sub[0]]["output_tok_per_s"], 2)
            result["ratios"] = ratios
        try:
            import subprocess

            card = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                                  text=True, timeout=10).stdout.strip().splitlines()
            result["card"] = card[0] if card else None
        except Exception:  # noqa: BLE001 - no nvidia-smi (CPU or another vendor)
            result["card"] = None
        text = json.dumps(result, indent=2)
        print(text)
        if args.out:
            with open(args.out, "w") as f:
                f.write(text)
    finally:
        if temp:
            shutil.rmtree(model_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
