"""Building an engine: resolve the device, read the checkpoint's config, make the
start-up choices, start the executor and its workers, size the KV cache, and put
the engine core on top.  Shared by LLMEngine (sync) and AsyncLLM."""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from ..core import startup
from ..core.config import EngineConfig
from ..core.device import resolve_device
from ..core.engine_core import EngineCore
from ..core.loader import open_checkpoint
from ..core.model_protocol import ModelSpec
from ..core.worker import WorkerConfig
from .input_processor import InputProcessor
from .model_builder import build_model, check_architecture
from .multimodal import FAMILIES as IMAGE_FAMILIES


def multimodal_processor(model_dir: str, cfg, tokenizer, allowed_domains: tuple = ()):
    """The image front end of a vision-language model; None for text-only models."""
    if cfg.get("model_type") not in IMAGE_FAMILIES:
        return None
    from .multimodal import MultimodalProcessor

    return MultimodalProcessor(model_dir, cfg, tokenizer, allowed_domains=allowed_domains)

EXECUTORS = ("inproc", "mp")


@dataclass
class EngineParts:
    core: EngineCore
    inputs: InputProcessor
    tokenizer: object
    backend: object
    device: torch.device
    model_dir: str
    model_config: object
    dtype: torch.dtype
    block_size: int
    max_model_len: int
    load_seconds: float


def build_engine(model: str, device: str = "auto", dtype="auto", quantization: str | None = None,
                 tensor_parallel_size: int = 1, load_format: str = "auto", tokenizer=None,
                 config: EngineConfig | None = None, executor: str = "inproc") -> EngineParts:
    cfg = config or EngineConfig()
    cfg.validate()
    if isinstance(tensor_parallel_size, bool) or not isinstance(tensor_parallel_size, int) \
            or tensor_parallel_size < 1:
        raise ValueError(f"tensor_parallel_size must be an integer >= 1, got {tensor_parallel_size!r}")
    if tensor_parallel_size != 1:
        raise NotImplementedError(
            f"tensor_parallel_size={tensor_parallel_size}: only 1 is implemented so far (one device per engine)")
    if load_format not in ("auto", "dummy"):
        raise ValueError(f"load_format must be 'auto' or 'dummy', got {load_format!r}")
    if executor not in EXECUTORS:
        raise ValueError(f"executor must be one of {', '.join(EXECUTORS)}; got {executor!r}")
    dev = resolve_device(device)
    b = dev.backend
    ckpt = open_checkpoint(model)
    mc = ckpt.config
    check_architecture(mc.architecture)
    dt = startup.pick_dtype(b, dtype, mc)
    quant = startup.pick_quant(b, quantization, mc)
    max_len = startup.pick_max_len(cfg.max_model_len, mc)
    block_size = startup.pick_block_size(b, cfg.block_size)
    startup.check_kv_cache_dtype(b, cfg.kv_cache_dtype)
    if cfg.enforce_eager and "eager" not in b.graph_modes:
        raise ValueError(f"enforce_eager=True, but the {b.name} backend runs only in graph mode "
                         f"here (its modes: {', '.join(b.graph_modes)})")
    graphs = not cfg.enforce_eager and "graph" in b.graph_modes
    max_batched = cfg.max_num_batched_tokens or max(8192, cfg.max_num_seqs)
    vocab = int(mc.vocab_size)
    spec = ModelSpec(checkpoint=ckpt.path, architecture=mc.architecture, dtype=dt, quant=quant, max_model_len=max_len,
                     vocab_size=vocab, load_format=load_format, seed=cfg.seed, factory=build_model)
    # The worker resolves the device again (in its own process, with the multi-process
    # executor): by backend name, since several backends may share a torch device type.
    dev_name = b.name if dev.index is None else f"{b.name}:{dev.index}"
    wcfg = WorkerConfig(device=dev_name, model=spec, block_size=block_size,
                        kv_cache_dtype=cfg.kv_cache_dtype, max_num_seqs=cfg.max_num_seqs,
                        max_num_batched_tokens=max_batched, gpu_memory_utilization=cfg.gpu_memory_utilization,
                        graphs=graphs, num_kv_blocks=cfg.num_kv_blocks)
    t0 = time.perf_counter()
    if executor == "mp":
        from ..core.mp_executor import MultiProcessExecutor

        ex = MultiProcessExecutor(wcfg, world_size=tensor_parallel_size)
    else:
        from ..core.executor import InProcessExecutor

        ex = InProcessExecutor(wcfg)
    try:
        num_blocks, source = ex.determine_num_blocks()
        need = -(-max_len // block_size)
        if num_blocks < need:
            raise ValueError(
                f"the KV cache holds {num_blocks} blocks of {block_size} tokens ({source}), fewer than one sequence "
                f"of max_model_len={max_len} needs ({need}); lower max_model_len, or give the cache more memory "
                f"(gpu_memory_utilization, num_kv_blocks, or HALINFER_CPU_KVCACHE_GB on the CPU)")
        ex.init_cache(num_blocks)
    except BaseException:
        ex.shutdown()
        raise
    load_seconds = time.perf_counter() - t0
    tok = tokenizer if tokenizer is not None else ckpt.tokenizer()
    eos = ckpt.eos_token_ids(tok)
    core = EngineCore(ex, cfg, max_model_len=max_len, block_size=block_size, num_blocks=num_blocks,
                      vocab_size=vocab, eos_ids=eos, max_num_batched_tokens=max_batched)
    inputs = InputProcessor(tok, vocab, max_len, ckpt.path,
                            multimodal_processor(ckpt.path, mc, tok, tuple(cfg.allowed_media_domains)))
    return EngineParts(core, inputs, tok, b, dev.torch_device, ckpt.path, mc, dt, block_size, max_len, load_seconds)
