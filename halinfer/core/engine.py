"""The engine: builds the model on a device, then runs the schedule-execute-sample loop."""
from __future__ import annotations

import itertools
import logging
import time
from dataclasses import dataclass

import numpy as np
import torch

from . import detokenizer
from .backend import Backend
from .config import EngineConfig, ModelConfig, parse_dtype
from .device import resolve_device
from .kv_cache import BlockManager
from .loader import init_dummy_weights, open_checkpoint
from .outputs import CompletionOutput, RequestOutput
from .runner import ModelRunner, kv_bytes_per_block
from .sampling import SamplingParams
from .scheduler import Scheduler
from .sequence import Sequence

log = logging.getLogger("halinfer")

_QUANT_ALIASES = {"awq": "awq", "w4a16": "awq", "w8a8": "w8a8", "smooth_quant": "w8a8"}


@dataclass
class StreamEvent:
    request_id: str
    index: int
    delta: str
    token_ids: list[int]
    finished: bool


class _Request:
    def __init__(self, request_id, prompt, prompt_token_ids, seqs):
        self.request_id = request_id
        self.prompt = prompt
        self.prompt_token_ids = prompt_token_ids
        self.seqs: list[Sequence] = seqs

    @property
    def finished(self) -> bool:
        return all(s.is_finished for s in self.seqs)

    def output(self) -> RequestOutput:
        outs = [
            CompletionOutput(s.index, s.text, s.output_token_ids, s.finish_reason,
                             list(s.logprobs) if s.params.logprobs is not None else None, s.stop_reason, s.error)
            for s in self.seqs
        ]
        return RequestOutput(self.request_id, self.prompt, list(self.prompt_token_ids), outs, self.finished)


class LLMEngine:
    def __init__(self, model: str, device: str = "auto", dtype: str | torch.dtype = "auto",
                 quantization: str | None = None, tensor_parallel_size: int = 1, load_format: str = "auto",
                 tokenizer=None, config: EngineConfig | None = None):
        self.cfg_engine = cfg = config or EngineConfig()
        cfg.validate()
        if tensor_parallel_size != 1:
            raise NotImplementedError(
                f"tensor_parallel_size={tensor_parallel_size}: only 1 is implemented so far (one device per engine)"
            )
        if load_format not in ("auto", "dummy"):
            raise ValueError(f"load_format must be 'auto' or 'dummy', got {load_format!r}")
        dev = resolve_device(device)
        self.backend: Backend = dev.backend
        self.device = dev.torch_device
        self.backend.set_device(self.device)

        self.checkpoint = ckpt = open_checkpoint(model)
        self.model_dir = model
        self.model_config = mc = ckpt.config
        from ..models.registry import model_class

        cls = model_class(mc.architecture)
        self.dtype = self._pick_dtype(dtype, mc)
        quant = self._pick_quant(quantization, mc)
        self.max_model_len = self._pick_max_len(cfg.max_model_len, mc)
        self.block_size = self._pick_block_size(cfg.block_size)

        from ..models.layers import ModelContext

        ctx = ModelContext(ops=self.backend.ops, dtype=self.dtype, device=self.device, quant=quant,
                           max_model_len=self.max_model_len)
        t0 = time.perf_counter()
        with torch.device(self.device):
            self.model = cls(mc, ctx)
        if load_format == "dummy":
            init_dummy_weights(self.model, cfg.seed)
        else:
            loaded = self.model.load_weights(ckpt.weights())
            missing = sorted(self.model.expected_params() - loaded)
            if missing:
                raise ValueError(f"checkpoint {model!r} lacks {len(missing)} tensor(s) the model needs, e.g. "
                                 f"{', '.join(missing[:5])}")
        self.model.eval()
        self.load_seconds = time.perf_counter() - t0

        self.tokenizer = tokenizer if tokenizer is not None else ckpt.tokenizer()
        self.eos_ids = ckpt.eos_token_ids(self.tokenizer)
        self.vocab_size = int(mc.vocab_size)

        self.max_num_batched_tokens = cfg.max_num_batched_tokens or max(8192, cfg.max_num_seqs)
        self.graph_memory_estimate = 0  # bytes reserved in the KV budget for captured graphs
        num_blocks = self._pick_num_blocks()
        self.runner = ModelRunner(self.model, self.backend, self.device, self.dtype, self.block_size, num_blocks,
                                  cfg.kv_cache_dtype, self.max_model_len)
        self.block_manager = BlockManager(num_blocks, self.block_size, cfg.enable_prefix_caching)
        self.scheduler = Scheduler(self.block_manager, cfg.max_num_seqs, self.max_num_batched_tokens,
                                   cfg.scheduling_policy)
        self.graphs = False
        if cfg.enforce_eager and "eager" not in self.backend.graph_modes:
            raise ValueError(f"enforce_eager=True, but the {self.backend.name} backend runs only in graph mode "
                             f"here (its modes: {', '.join(self.backend.graph_modes)})")
        if self._graphs_wanted():
            self.runner.enable_graphs(cfg.max_num_seqs)
            self.graphs = True
        self.rng = np.random.default_rng(cfg.seed)
        self.backend.manual_seed(cfg.seed)
        self._ids = itertools.count()
        self._arrival = itertools.count()
        self._pending = None  # a launched step whose tokens the host has not read yet
        # Steps launched, by kind, and their tokens (benchmarks read these).
        self.stats = {"prefill_steps": 0, "prefill_tokens": 0, "decode_steps": 0, "decode_tokens": 0}
        self.requests: dict[str, _Request] = {}

    # -- choices made at start-up, each with its error ---------------------------
    def _pick_dtype(self, dtype, mc: ModelConfig) -> torch.dtype:
        b = self.backend
        accepted = ", ".join(str(d).replace("torch.", "") for d in b.dtypes)
        if dtype in (None, "auto"):
            want = mc.torch_dtype
            if want in b.dtypes:
                return want
            for alt in (torch.bfloat16, torch.float16, torch.float32):
                if alt in b.dtypes:
                    log.warning("%s does not support %s; using %s", b.name, want, alt)
                    return alt
        d = parse_dtype(dtype)
        if d not in b.dtypes:
            raise ValueError(f"dtype {dtype!r} is not supported on {b.name}; accepted: auto, {accepted}")
        return d

    def _pick_quant(self, quantization, mc: ModelConfig) -> dict | None:
        qc = mc.get("quantization_config") or {}
        ckpt = _QUANT_ALIASES.get(str(qc.get("quant_method", "")).lower()) if qc else None
        if qc and ckpt is None:
            raise ValueError(f"checkpoint quantization {qc.get('quant_method')!r} is not supported; supported: "
                             "awq (W4A16), w8a8")
        want = _QUANT_ALIASES.get(str(quantization).lower()) if quantization else None
        if quantization and want is None:
            raise ValueError(f"quantization={quantization!r} is not supported; accepted: None, awq, w8a8")
        if want and ckpt and want != ckpt:
            raise ValueError(f"quantization={quantization!r} but the checkpoint is quantized with {ckpt!r}")
        if want and not ckpt:
            raise ValueError(f"quantization={quantization!r} needs a checkpoint quantized that way; "
                             f"{self.model_dir!r} holds unquantized weights")
        method = ckpt
        if method is None:
            return None
        if method not in self.backend.weight_quant:
            raise ValueError(f"{method} quantization is not supported on {self.backend.name}; this backend supports: "
                             f"{', '.join(self.backend.weight_quant) or 'no weight quantization'}")
        if method == "awq":
            if qc.get("bits", 4) != 4 or str(qc.get("version", "gemm")).lower() != "gemm":
                raise ValueError("only 4-bit AWQ in GEMM packing is supported")
            return {"method": "awq", "group_size": int(qc.get("group_size", 128))}
        return {"method": "w8a8"}

    def _pick_max_len(self, requested, mc: ModelConfig) -> int:
        limit = mc.max_position
        _, rtype, rp = mc.rope_params()
        if rtype in ("linear", "dynamic") and rp.get("factor"):
            limit = int(limit * float(rp["factor"]))  # these scalings exist to stretch the context
        if requested is None:
            return limit
        if requested > limit:
            raise ValueError(f"max_model_len={requested} exceeds the model's context of {limit} tokens "
                             "(max_position_embeddings, times the rope scaling factor where it stretches the context)")
        return int(requested)

    def _pick_block_size(self, requested) -> int:
        b = self.backend
        if requested is None:
            return b.default_block_size
        if requested not in b.block_sizes:
            raise ValueError(f"block_size={requested} is not supported on {b.name}; accepted: "
                             f"{', '.join(map(str, b.block_sizes))}")
        return int(requested)

    def _pick_num_blocks(self) -> int:
        cfg = self.cfg_engine
        if cfg.kv_cache_dtype != "auto" and cfg.kv_cache_dtype not in self.backend.kv_cache_dtypes:
            raise ValueError(f"kv_cache_dtype={cfg.kv_cache_dtype!r} is not supported on {self.backend.name}; "
                             f"accepted: {', '.join(self.backend.kv_cache_dtypes)}")
        per_block = kv_bytes_per_block(self.model.kv_cache_spec(), self.block_size, self.dtype,
                                       cfg.kv_cache_dtype == "int8")
        if cfg.num_kv_blocks is not None:
            num = int(cfg.num_kv_blocks)
            source = "num_kv_blocks"
        else:
            in_use = self._profile_peak_memory()
            budget = self.backend.kv_cache_budget(self.device, cfg.gpu_memory_utilization, in_use)
            num = budget // per_block
            source = f"{budget / 2**30:.2f} GiB KV budget"
        need = -(-self.max_model_len // self.block_size)
        if num < need:
            raise ValueError(
                f"the KV cache holds {num} blocks of {self.block_size} tokens ({source}), fewer than one sequence of "
                f"max_model_len={self.max_model_len} needs ({need}); lower max_model_len, or give the cache more "
                f"memory (gpu_memory_utilization, num_kv_blocks, or HALINFER_CPU_KVCACHE_GB on the CPU)"
            )
        return num

    def _profile_peak_memory(self) -> int:
        """Peak device memory of the largest step the scheduler may run (weights included).

        Runs one forward of max_num_batched_tokens dummy tokens against a one-block
        scratch cache, samples max_num_seqs rows of logits, and reads the allocator's
        peak.  Backends that do not track memory report 0 and skip the work.
        """
        from .scheduler import ScheduledBatch

        b = self.backend
        b.synchronize(self.device)
        if b.max_memory_allocated(self.device) == 0:
            return 0
        b.reset_peak_memory(self.device)
        scratch = ModelRunner(self.model, b, self.device, self.dtype, self.block_size, 1, "auto", self.max_model_len)
        total, per = self.max_num_batched_tokens, max(1, self.max_model_len - 1)
        seqs, num_new, sid = [], [], 0
        while total > 0:
            n = min(per, total)
            s = Sequence(seq_id=-1 - sid, request_id="__profile__", index=0, prompt_token_ids=[0] * n,
                         params=SamplingParams(temperature=0), seed=0, arrival=-1)
            s.block_ids = [0] * -(-n // self.block_size)
            seqs.append(s)
            num_new.append(n)
            total -= n
            sid += 1
        scratch.execute(ScheduledBatch(seqs, num_new))
        # A decode step of max_num_seqs rows samples from max_num_seqs rows of logits.
        logits = torch.empty(self.cfg_engine.max_num_seqs, self.vocab_size, dtype=torch.float32, device=self.device)
        logits.normal_()
        logits.softmax(-1)
        del logits
        b.synchronize(self.device)
        peak = b.max_memory_allocated(self.device)
        graph_bytes = 0
        if self._graphs_wanted():
            # Graphs are captured after the cache exists (they bake its addresses in), so
            # measure what they will hold now: the largest bucket's pool, which the smaller
            # buckets share.
            before = b.memory_allocated(self.device)
            g = scratch.captured_runner([max(b.graph_capture_sizes(self.cfg_engine.max_num_seqs))])
            b.synchronize(self.device)
            graph_bytes = max(0, b.memory_allocated(self.device) - before)
            del g
        del scratch
        b.empty_cache()
        self.graph_memory_estimate = graph_bytes
        return peak + graph_bytes

    def _graphs_wanted(self) -> bool:
        return not self.cfg_engine.enforce_eager and "graph" in self.backend.graph_modes

    # -- requests -------------------------------------------------------------------
    def encode(self, prompt: str) -> list[int]:
        if self.tokenizer is None:
            raise ValueError(f"{self.model_dir!r} has no tokenizer; pass prompt_token_ids instead of text")
        return list(self.tokenizer.encode(prompt))

    def add_request(self, prompt: str | None = None, params: SamplingParams | None = None,
                    prompt_token_ids: list[int] | None = None, request_id: str | None = None) -> str:
        params = params or SamplingParams()
        if not isinstance(params, SamplingParams):
            raise TypeError(f"sampling_params must be a SamplingParams, got {type(params).__name__}")
        params.validate()
        if prompt_token_ids is None:
            if prompt is None:
                raise ValueError("give a prompt or prompt_token_ids")
            prompt_token_ids = self.encode(prompt)
        ids = [int(t) for t in prompt_token_ids]
        if not ids:
            raise ValueError("the prompt is empty (0 tokens); at least one token is needed")
        bad = [t for t in ids if not 0 <= t < self.vocab_size]
        if bad:
            raise ValueError(f"prompt token id {bad[0]} is outside the vocabulary [0, {self.vocab_size})")
        if len(ids) >= self.max_model_len:
            raise ValueError(f"the prompt has {len(ids)} tokens; the context (max_model_len) is {self.max_model_len}, "
                             f"so a prompt may have at most {self.max_model_len - 1}")
        rid = request_id if request_id is not None else str(next(self._ids))
        if rid in self.requests:
            raise ValueError(f"request id {rid!r} is already in use")
        banned = frozenset()
        if params.min_tokens:
            banned = frozenset(params.stop_token_ids) | (frozenset() if params.ignore_eos else frozenset(self.eos_ids))
        seqs = []
        for j in range(params.n):
            if params.seed is None:
                seed = int(self.rng.integers(0, 2**62))
            else:  # completions of one seeded request must differ from each other, reproducibly
                seed = params.seed if j == 0 else int(np.random.default_rng([params.seed, j]).integers(0, 2**62))
            s = Sequence(seq_id=next(self._ids), request_id=rid, index=j, prompt_token_ids=ids, params=params,
                         seed=seed, arrival=next(self._arrival), banned_ids=banned)
            detokenizer.start(s)
            seqs.append(s)
        self.requests[rid] = _Request(rid, prompt, ids, seqs)
        for s in seqs:
            self.scheduler.add(s)
        return rid

    def abort(self, request_id: str) -> None:
        req = self.requests.pop(request_id, None)
        if req is None:
            return
        for s in req.seqs:
            if not s.is_finished:
                s.finish_reason = "abort"
                self.scheduler.finish(s)

    def has_unfinished(self) -> bool:
        return self.scheduler.has_work() or self._pending is not None

    # -- the loop ---------------------------------------------------------------------
    def step(self) -> list[StreamEvent]:
        """Run one step and return what it produced.

        With async scheduling a decode step's successor is launched before the host
        reads the step's tokens (they feed the successor on the device), so the host's
        bookkeeping overlaps the device's work; the events then arrive one call later.
        """
        prev = self._pending
        if prev is not None:
            self._pending = self._launch_successor(prev)
            return self._process(self.runner.collect(prev))
        batch = self.scheduler.schedule()
        if not batch.seqs:
            return []
        pending = self.runner.launch(batch)
        self.scheduler.after_step(batch)
        self._count(batch)
        if self._may_overlap(batch, pending):
            self._pending = pending
            return []
        return self._process(self.runner.collect(pending))

    def _may_overlap(self, batch, pending) -> bool:
        return (self.cfg_engine.async_scheduling and batch.is_decode and len(pending.seqs) == len(batch.seqs)
                # penalties read the output history on the host, which lags by a step here
                and not any(s.params.uses_penalties for s in batch.seqs))

    def _launch_successor(self, prev):
        """Launch the decode step after ``prev`` from prev's device-side tokens, or None
        when the next step must be planned with prev's results in hand."""
        if self.scheduler.prefill_due():
            return None
        keep, rows, need = [], [], 0
        bs = self.block_size
        for i, s in enumerate(prev.seqs):
            if s.is_finished:
                continue
            if s.num_computed + 1 >= self.max_model_len or (
                    s.params.max_tokens is not None and s.num_computed + 1 - s.num_prompt >= s.params.max_tokens):
                continue  # prev drew its last token (length or max_tokens): nothing to compute for it
            need += s.num_computed >= len(s.block_ids) * bs
            keep.append(s)
            rows.append(i)
        if not keep or need > self.block_manager.num_free:
            return None
        from .scheduler import ScheduledBatch

        for s in keep:
            self.block_manager.allocate(s, s.num_computed + 1)
        batch = ScheduledBatch(keep, [1] * len(keep))
        ids = prev.tokens if len(rows) == len(prev.seqs) else \
            prev.tokens.index_select(0, torch.tensor(rows, device=prev.tokens.device))
        pending = self.runner.launch(batch, input_ids=ids)
        self.scheduler.after_step(batch)
        self._count(batch)
        return pending

    def _count(self, batch) -> None:
        kind = "decode" if batch.is_decode else "prefill"
        self.stats[f"{kind}_steps"] += 1
        self.stats[f"{kind}_tokens"] += batch.num_tokens

    def _process(self, out) -> list[StreamEvent]:
        events = []
        for i, (seq, tok) in enumerate(zip(out.seqs, out.tokens)):
            if seq.is_finished:
                continue  # it ended (or was aborted) while this step was in flight
            try:
                delta = self._append(seq, tok, out.logprobs[i] if out.logprobs else None)
            except Exception as e:  # noqa: BLE001 - one request's failure must not end the others
                log.exception("request %s failed", seq.request_id)
                seq.error = f"{type(e).__name__}: {e}"
                seq.finish_reason = "error"
                delta = ""
            if seq.finish_reason is not None and not seq.is_finished:
                self.scheduler.finish(seq)
            events.append(StreamEvent(seq.request_id, seq.index, delta, [tok], seq.is_finished))
        return events

    def _append(self, seq: Sequence, tok: int, logprobs) -> str:
        p = seq.params
        seq.token_ids.append(tok)
        if logprobs is not None:
            seq.logprobs.append(logprobs)
        stop_tok = (not p.ignore_eos and tok in self.eos_ids) or tok in p.stop_token_ids
        if stop_tok and seq.num_output > p.min_tokens - 1:
            seq.finish_reason, seq.stop_reason = "stop", tok
        delta = detokenizer.step(self.tokenizer, seq, p.skip_special_tokens)
        if p.stop and seq.finish_reason is None and delta:
            # Search only where a stop string could newly end: the delta plus the longest stop's tail.
            window = max(len(s) for s in p.stop) + len(delta)
            start = max(0, len(seq.text) - window)
            hits = [(seq.text.find(s, start), s) for s in p.stop]
            hits = [(i, s) for i, s in hits if i >= 0]
            if hits:
                i, s = min(hits)
                cut = len(seq.text) - len(delta)
                delta = seq.text[cut:i] if i >= cut else ""
                seq.text = seq.text[:i]
                seq.finish_reason, seq.stop_reason = "stop", s
        if seq.finish_reason is None:
            if p.max_tokens is not None and seq.num_output >= p.max_tokens:
                seq.finish_reason = "length"
            elif seq.num_tokens >= self.max_model_len:
                seq.finish_reason = "length"
        return delta

    def prompt_logits(self, prompt_token_ids: list[int]) -> torch.Tensor:
        """float32 [len, vocab]: the model's logits at every prompt position (one prefill,
        through the same cache and kernels as generation; blocks are released after)."""
        from .scheduler import ScheduledBatch

        ids = list(prompt_token_ids)
        if not 0 < len(ids) <= self.max_model_len:
            raise ValueError(f"prompt length {len(ids)} must be in [1, {self.max_model_len}]")
        seq = Sequence(seq_id=next(self._ids), request_id="__logits__", index=0, prompt_token_ids=ids,
                       params=SamplingParams(), seed=0, arrival=-1)
        if not self.block_manager.can_allocate(seq, len(ids)):
            raise RuntimeError("not enough free KV blocks for prompt_logits; call it while the engine is idle")
        self.block_manager.allocate(seq, len(ids))
        try:
            return self.runner.all_logits(ScheduledBatch([seq], [len(ids)]))
        finally:
            self.block_manager.free_seq(seq)

    def take_finished(self) -> list[RequestOutput]:
        done = [r for r in self.requests.values() if r.finished]
        for r in done:
            del self.requests[r.request_id]
        return [r.output() for r in done]

    def request_output(self, request_id: str) -> RequestOutput:
        return self.requests[request_id].output()
