"""Building an engine: resolve the device, read the checkpoint's config, make the
start-up choices, start the executor and its workers, size the KV cache, and put
the engine core on top.  Shared by LLMEngine (sync) and AsyncLLM."""
from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass

import torch

from ..core import startup
from ..core.config import EngineConfig
from ..core.device import resolve_device
from ..core.distributed import launched_externally
from ..core.engine_core import EngineCore
from ..core.loader import open_checkpoint
from ..core.model_protocol import ModelSpec
from ..core.worker import WorkerConfig
from .input_processor import InputProcessor
from .model_builder import build_model, check_architecture, check_parallel
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
    if load_format not in ("auto", "dummy"):
        raise ValueError(f"load_format must be 'auto' or 'dummy', got {load_format!r}")
    if executor not in EXECUTORS:
        raise ValueError(f"executor must be one of {', '.join(EXECUTORS)}; got {executor!r}")
    dev = resolve_device(device)
    b = dev.backend
    tp = tensor_parallel_size
    external = tp > 1 and launched_externally()
    check_parallel_devices(b, dev.index, tp, external)
    ckpt = open_checkpoint(model)
    mc = ckpt.config
    check_architecture(mc.architecture)
    check_parallel(mc, tp, cfg.enable_expert_parallel)
    dt = startup.pick_dtype(b, dtype, mc)
    quant = startup.pick_quant(b, quantization, mc)
    if tp > 1 and quant and quant["method"] not in ("awq", "w8a8"):
        # the parallel linears know how AWQ and W8A8 tensors split; GPTQ (packed along the
        # input) and FP8 block scales do not yet
        raise NotImplementedError(f"tensor_parallel_size={tp} with a {quant['method']} checkpoint is not "
                                  "implemented; with tensor parallelism: unquantized, awq, w8a8")
    max_len = startup.pick_max_len(cfg.max_model_len, mc)
    block_size = startup.pick_block_size(b, cfg.block_size)
    startup.check_kv_cache_dtype(b, cfg.kv_cache_dtype)
    if cfg.enforce_eager and "eager" not in b.graph_modes:
        raise ValueError(f"enforce_eager=True, but the {b.name} backend runs only in graph mode "
                         f"here (its modes: {', '.join(b.graph_modes)})")
    graphs = not cfg.enforce_eager and "graph" in b.graph_modes
    if cfg.max_num_seqs is None:
        cfg = dataclasses.replace(cfg, max_num_seqs=b.default_max_num_seqs(dev.index))
    max_batched = cfg.max_num_batched_tokens or max(8192, cfg.max_num_seqs)
    vocab = int(mc.vocab_size)
    spec = ModelSpec(checkpoint=ckpt.path, architecture=mc.architecture, dtype=dt, quant=quant, max_model_len=max_len,
                     vocab_size=vocab, load_format=load_format, seed=cfg.seed,
                     expert_parallel=cfg.enable_expert_parallel, factory=build_model)
    # The worker resolves the device again (in its own process, with the multi-process
    # executor): by backend name, since several backends may share a torch device type.
    dev_name = b.name if dev.index is None else f"{b.name}:{dev.index}"
    wcfg = WorkerConfig(device=dev_name, model=spec, block_size=block_size,
                        kv_cache_dtype=cfg.kv_cache_dtype, max_num_seqs=cfg.max_num_seqs,
                        max_num_batched_tokens=max_batched, gpu_memory_utilization=cfg.gpu_memory_utilization,
                        graphs=graphs, num_kv_blocks=cfg.num_kv_blocks)
    t0 = time.perf_counter()
    if external:
        # torchrun started this process as one rank: it runs the whole engine with its own
        # worker; every rank schedules the same requests identically, so the workers' plans agree.
        from ..core.executor import InProcessExecutor

        env = os.environ
        wcfg = dataclasses.replace(wcfg, rank=int(env["RANK"]), world_size=tp,
                                   local_rank=int(env.get("LOCAL_RANK", env["RANK"])), dist_init_method="env://")
        ex = InProcessExecutor(wcfg)
    elif executor == "mp" or tp > 1:
        from ..core.mp_executor import MultiProcessExecutor

        ex = MultiProcessExecutor(wcfg, world_size=tp)
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


def check_parallel_devices(backend, index: int | None, tp: int, external: bool) -> None:
    """tensor_parallel_size against the devices present and the backend's collective."""
    if tp == 1:
        return
    if not backend.dist_backend:
        raise ValueError(f"the {backend.name} backend declares no collective (dist_backend), so it runs only "
                         f"tensor_parallel_size=1")
    if external:
        world = int(os.environ["WORLD_SIZE"])
        if world != tp:
            raise ValueError(f"tensor_parallel_size={tp}, but the launcher started WORLD_SIZE={world} ranks; "
                             f"they must match (torchrun --nnodes * --nproc-per-node)")
        return
    if index is not None:
        raise ValueError(f"tensor_parallel_size={tp} uses devices 0..{tp - 1}; name the device without an index "
                         f"(device={backend.name!r})")
    if backend.device_type != "cpu" and tp > backend.device_count():
        raise ValueError(f"tensor_parallel_size={tp}, but {backend.name} has {backend.device_count()} device(s) "
                         f"here (`halinfer devices` lists them); use at most {backend.device_count()}, or torchrun "
                         f"across hosts")
