"""``halinfer serve [MODEL]``: arguments, the engine, uvicorn, and a clean SIGTERM.

SIGTERM (or Ctrl-C): new requests get 503, the listening socket closes, requests in
flight get ``--shutdown-timeout`` seconds to finish and are then aborted, the engine
stops, and the process exits 0.
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys

log = logging.getLogger("halinfer.serve")

# Engine options, as LLM takes them: (flag, type or "flag"/"no-flag", help).  Left out
# means LLM's default, so the server and LLM() agree on every default.
ENGINE_OPTIONS = (
    ("--device", str, "auto, cpu, cuda, cuda:N, ascend/npu, camb/mlu, maca (default auto)"),
    ("--dtype", str, "auto, float16, bfloat16, float32"),
    ("--max-model-len", int, "context length (default: the model's)"),
    ("--max-num-seqs", int, "sequences decoded together (default: the backend's for the device; 1024 on CUDA cards of 70 GiB or more, else 256)"),
    ("--max-num-batched-tokens", int, "prefill chunk budget per step"),
    ("--gpu-memory-utilization", float, "fraction of device memory to use (default 0.85)"),
    ("--block-size", int, "KV block size in tokens"),
    ("--num-kv-blocks", int, "fix the KV capacity (blocks)"),
    ("--kv-cache-dtype", str, "auto, int8, int4 or fp8, where the backend has it (halinfer devices)"),
    ("--quantization", str, "awq, gptq, w8a8 or fp8 (the checkpoint must be quantized so)"),
    ("--tensor-parallel-size", int, "devices per engine"),
    ("--enable-expert-parallel", "flag", "MoE with tensor parallelism: split the experts across the ranks"),
    ("--allowed-media-domains", lambda v: tuple(d.strip() for d in v.split(",") if d.strip()),
     "comma-separated hosts whose http(s) image URLs may be fetched (default: none)"),
    ("--load-format", str, "auto, or dummy (random weights)"),
    ("--tokenizer", str, "tokenizer directory, if not the model's"),
    ("--scheduling-policy", str, "separate or mixed"),
    ("--executor", str, "inproc or mp"),
    ("--seed", int, "the engine's seed for unseeded requests"),
    ("--enforce-eager", "flag", "no graph capture"),
    ("--no-enable-prefix-caching", "no-flag", "turn prefix caching off"),
    ("--no-async-scheduling", "no-flag", "read each step's tokens before launching the next"),
)


def _dest(flag: str) -> str:
    return flag.lstrip("-").removeprefix("no-").replace("-", "_")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", nargs="?", default=None,
                   help="anything LLM accepts; left out: the default model (SmolLM2-135M-Instruct, halinfer demo's)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--served-model-name", default=None, help="default: the model directory's basename")
    p.add_argument("--api-key", default=os.environ.get("HALINFER_API_KEY"),
                   help="require 'Authorization: Bearer KEY' on /v1 routes (env HALINFER_API_KEY)")
    p.add_argument("--max-queued-requests", type=int, default=None,
                   help="refuse (503 + Retry-After) beyond this many waiting sequences; default unbounded")
    p.add_argument("--shutdown-timeout", type=float, default=10.0,
                   help="seconds requests in flight get to finish after SIGTERM (default 10)")
    p.add_argument("--allowed-local-media-path", default=None, metavar="DIR",
                   help="chat image parts may name files (paths, file:// URLs) under DIR; default: none")
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    g = p.add_argument_group("engine options (as LLM takes them)")
    for flag, typ, help_ in ENGINE_OPTIONS:
        if typ == "flag":
            g.add_argument(flag, dest=_dest(flag), action="store_true", default=None, help=help_)
        elif typ == "no-flag":
            g.add_argument(flag, dest=_dest(flag), action="store_false", default=None, help=help_)
        else:
            g.add_argument(flag, dest=_dest(flag), type=typ, default=None, help=help_)


def engine_options(a) -> dict:
    return {_dest(f): getattr(a, _dest(f)) for f, _, _ in ENGINE_OPTIONS if getattr(a, _dest(f)) is not None}


def resolve_model(model: str | None) -> str:
    if model is not None:
        return model
    from ..default_model import default_model_path

    return default_model_path()


def _check(a) -> None:
    if a.max_queued_requests is not None and a.max_queued_requests < 0:
        raise ValueError(f"--max-queued-requests must be >= 0, got {a.max_queued_requests}")
    if a.shutdown_timeout < 0:
        raise ValueError(f"--shutdown-timeout must be >= 0, got {a.shutdown_timeout}")
    if a.allowed_local_media_path is not None and not os.path.isdir(a.allowed_local_media_path):
        raise ValueError(f"--allowed-local-media-path {a.allowed_local_media_path!r} is not a directory")
    if not 0 <= a.port < 65536:
        raise ValueError(f"--port must be in [0, 65535], got {a.port}")


def serve(a) -> int:
    try:
        import uvicorn
    except ImportError as e:
        raise ValueError(f"halinfer serve needs the serve extra: pip install 'halinfer[serve]' ({e})") from None
    from ..engine.async_llm import AsyncLLM
    from .app import build_app

    _check(a)
    logging.basicConfig(level=a.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    model = resolve_model(a.model)
    engine = AsyncLLM(model, **engine_options(a))
    name = a.served_model_name or os.path.basename(os.path.normpath(str(engine.model_dir)))
    app = build_app(engine, name, api_key=a.api_key, max_queued_requests=a.max_queued_requests,
                    allowed_local_media_path=a.allowed_local_media_path)
    bs = engine.parts.block_size
    log.info("model %s (served as %r) on %s, backend %s; context %d tokens; KV cache %d blocks x %d tokens "
             "= %d tokens", engine.model_dir, name, engine.device, engine.backend.name, engine.max_model_len,
             engine.kv_blocks_total, bs, engine.kv_blocks_total * bs)
    log.info("listening on http://%s:%d (OpenAI API under /v1)%s", a.host, a.port,
             "; API key required" if a.api_key else "")

    admission = app.state.admission

    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame):
            if not admission.draining:
                log.info("signal %s: refusing new requests; %.0f s for those in flight", sig, a.shutdown_timeout)
            admission.draining = True
            super().handle_exit(sig, frame)

    config = uvicorn.Config(app, host=a.host, port=a.port, log_level=a.log_level,
                            timeout_graceful_shutdown=a.shutdown_timeout, access_log=a.log_level == "debug")
    # uvicorn re-raises the signal once it has shut down; these handlers take it quietly,
    # so the process exits 0 after a clean shutdown instead of dying by the signal.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    try:
        Server(config).run()
    finally:
        engine.shutdown(timeout=a.shutdown_timeout)
    log.info("stopped")
    return 0 if engine.dead is None else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="halinfer serve", description="OpenAI-compatible server")
    add_arguments(p)
    return serve(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
