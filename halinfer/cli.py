"""`halinfer ...` command line."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time


def _engine_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N, ascend/npu, camb/mlu, maca")
    p.add_argument("--dtype", default="auto", help="auto, float16, bfloat16, float32")
    p.add_argument("--max-model-len", type=int, default=None)
    p.add_argument("--quantization", default=None, help="awq or w8a8 (the checkpoint must be quantized so)")
    p.add_argument("--kv-cache-dtype", default="auto", help="auto or int8")
    p.add_argument("--enforce-eager", action="store_true", help="no graph capture")
    p.add_argument("--gpu-memory-utilization", type=float, default=0.85)


def _sampling_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=-1)
    p.add_argument("--min-p", type=float, default=0.0)
    p.add_argument("--repetition-penalty", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--stop", action="append", default=None, help="stop string (repeatable)")
    p.add_argument("--ignore-eos", action="store_true")


def _make_llm(a):
    from .llm import LLM

    return LLM(a.model, device=a.device, dtype=a.dtype, max_model_len=a.max_model_len, quantization=a.quantization,
               kv_cache_dtype=a.kv_cache_dtype, enforce_eager=a.enforce_eager,
               gpu_memory_utilization=a.gpu_memory_utilization)


def _params(a):
    from .core.sampling import SamplingParams

    return SamplingParams(max_tokens=a.max_tokens, temperature=a.temperature, top_p=a.top_p, top_k=a.top_k,
                          min_p=a.min_p, repetition_penalty=a.repetition_penalty, seed=a.seed, stop=a.stop,
                          ignore_eos=a.ignore_eos)


def cmd_devices(a) -> int:
    from .core.device import list_devices
    from .core.plugin import load_plugins

    unknown = load_plugins().unknown_error()
    if unknown:
        print(f"error: {unknown}", file=sys.stderr)
        return 2
    devs = list_devices()
    if a.json:
        print(json.dumps(devs, indent=2))
        return 0
    for d in devs:
        mark = "available" if d["available"] else "unavailable"
        names = d["name"] + (f" ({', '.join(d['aliases'])})" if d.get("aliases") else "")
        print(f"{names:<18} {mark:<12} {d['reason'].splitlines()[0]}")
        if d.get("description"):
            print(f"{'':<18} {d['description']}")
        if d["available"] and "dtypes" in d:
            print(f"{'':<18} devices: {d['device_count']}  dtypes: {', '.join(d['dtypes'])}  "
                  f"modes: {', '.join(d['graph_modes'])}  kv: {', '.join(d['kv_cache_dtypes'])}  "
                  f"weight quant: {', '.join(d['weight_quant']) or '-'}")
    return 0


def cmd_generate(a) -> int:
    llm = _make_llm(a)
    sp = _params(a)
    if a.stream:
        for delta in llm.stream(a.prompt, sp):
            print(delta, end="", flush=True)
        print()
        return 0
    t0 = time.perf_counter()
    out = llm.generate([a.prompt], sp, use_tqdm=False)[0]
    dt = time.perf_counter() - t0
    c = out.outputs[0]
    print(c.text)
    print(f"[{len(c.token_ids)} tokens in {dt:.2f}s on {llm.device}, finish: {c.finish_reason}]", file=sys.stderr)
    return 0


def cmd_chat(a) -> int:
    llm = _make_llm(a)
    sp = _params(a)
    history: list[dict] = []
    if a.system:
        history.append({"role": "system", "content": a.system})
    print(f"halinfer chat on {llm.device} — empty line or Ctrl-D to quit", file=sys.stderr)
    while True:
        try:
            line = input("> ")
        except EOFError:
            break
        if not line.strip():
            break
        history.append({"role": "user", "content": line})
        prompt = llm.apply_chat_template(history)
        reply = ""
        for delta in llm.stream(prompt, sp, prompt_token_ids=llm.engine.encode(prompt)):
            reply += delta
            print(delta, end="", flush=True)
        print()
        history.append({"role": "assistant", "content": reply})
    return 0


def cmd_support(a) -> int:
    from .core.plugin import load_plugins
    from .support.matrix import render_markdown

    reg = load_plugins()
    if a.device:
        b = reg.find(a.device.split(":")[0].lower())
        if b is None:
            print(f"error: unknown device {a.device!r}; known: {', '.join(reg.names())}", file=sys.stderr)
            return 2
        backends = [b]
    else:
        backends = list(reg.backends.values())
    for b in backends:
        ok, why = b.available()
        print(f"## {b.name} ({'available' if ok else 'unavailable here: ' + why.splitlines()[0]})\n")
        print(render_markdown(b, a.llm_only))
    return 0


def cmd_doctor(a) -> int:
    import platform

    from .core.plugin import load_plugins

    print(f"python {platform.python_version()}  halinfer {__import__('halinfer').__version__}")
    reg = load_plugins()
    for rec in reg.records:
        if rec.error:
            print(f"\n{rec.name}: plugin failed to load: {rec.error.splitlines()[0]}")
            continue
        for b in rec.backends:
            ok, why = b.available()
            print(f"\n{b.name}: {'available' if ok else 'unavailable'} — {why.splitlines()[0]}")
            try:
                versions = b.versions()
            except Exception as e:  # noqa: BLE001 - doctor reports, never crashes
                print(f"  versions(): {type(e).__name__}: {e}")
                continue
            for name, (need, have) in versions.items():
                print(f"  {name:<20} needs {need:<28} installed {have}")
    return 0


def cmd_demo(a) -> int:
    from .demo import run_demo

    return run_demo(device=a.device, cache_dir=a.cache_dir, max_tokens=a.max_tokens)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="halinfer", description="LLM inference on any accelerator")
    sub = p.add_subparsers(dest="cmd", required=True)

    s = sub.add_parser("devices", help="list plugins, availability and why")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_devices)

    s = sub.add_parser("generate", help="generate a completion for one prompt")
    s.add_argument("model", help="local Hugging Face model directory")
    s.add_argument("prompt")
    s.add_argument("--stream", action="store_true")
    _engine_args(s)
    _sampling_args(s)
    s.set_defaults(fn=cmd_generate)

    s = sub.add_parser("chat", help="interactive chat with streaming output")
    s.add_argument("model")
    s.add_argument("--system", default=None, help="system prompt")
    _engine_args(s)
    _sampling_args(s)
    s.set_defaults(fn=cmd_chat)

    s = sub.add_parser("demo", help="build a small model locally, generate, and check against HF transformers")
    s.add_argument("--device", default="auto")
    s.add_argument("--cache-dir", default=os.environ.get("HALINFER_CACHE", os.path.expanduser("~/.cache/halinfer")))
    s.add_argument("--max-tokens", type=int, default=48)
    s.set_defaults(fn=cmd_demo)

    s = sub.add_parser("support", help="the support matrix: each backend's claims and what tests verified")
    s.add_argument("--device", default=None, help="one backend (name or alias); default: every backend found")
    s.add_argument("--llm-only", action="store_true", help="text models only")
    s.set_defaults(fn=cmd_support)

    s = sub.add_parser("doctor", help="per plugin: what it needs beside what is installed")
    s.set_defaults(fn=cmd_doctor)

    a = p.parse_args(argv)
    try:
        return a.fn(a)
    except (ValueError, FileNotFoundError, NotADirectoryError, NotImplementedError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
