"""One model step on the worker: a StepPlan -> token batch -> model -> sampled tokens."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .attention import LayerKV, StepInputs
from .backend import Backend
from .encoder_cache import EncoderCache
from .graph import CapturedDecodeRunner, EagerRunner, GraphRunner
from .ops.kv_quant import kv_storage_dtype, kv_stored_dim
from .sampling import top_logprobs
from .slots import SlotTable
from .step_plan import StepOutput, StepPlan


def kv_mode(kv_cache_dtype: str) -> str | None:
    """The cache's quantization (core/ops/kv_quant.py) for a kv_cache_dtype setting."""
    return None if kv_cache_dtype in (None, "auto") else kv_cache_dtype


def kv_bytes_per_block(specs, block_size: int, dtype: torch.dtype, quant: str | bool | None) -> int:
    quant = "int8" if quant is True else (quant or None)
    elt = torch.empty(0, dtype=kv_storage_dtype(quant, dtype)).element_size()
    # float32 scale per token per head for k (and v); int4 adds a float32 zero
    meta = {None: 0, "int8": 4, "fp8": 4, "int4": 8}[quant]
    total = 0
    for s in specs:
        per_tok = s.num_kv_heads * (kv_stored_dim(quant, s.head_dim) + kv_stored_dim(quant, s.v_head_dim or 0))
        total += block_size * per_tok * elt
        total += block_size * s.num_kv_heads * meta * (2 if s.v_head_dim else 1)
    return total


@dataclass
class PendingStep:
    """A launched step: its tokens are on their way to ``host`` (ready once ``event`` is)."""

    slots: list[int]                # slots of the sampling rows
    host: torch.Tensor | None       # int64 [n] host buffer the tokens are copied into
    logprobs: tuple | None          # device tensors from top_logprobs
    want: list[int] | None          # per sampling row: logprobs asked (-1: none)
    event: object


class ModelRunner:
    def __init__(self, model, backend: Backend, device: torch.device, dtype: torch.dtype,
                 block_size: int, num_blocks: int, kv_cache_dtype: str, max_model_len: int, num_slots: int):
        self.model = model
        self.backend = backend
        self.device = device
        self.runtime = backend.runtime(device)
        self.dtype = dtype
        self.block_size = block_size
        self.num_blocks = num_blocks
        self.max_model_len = max_model_len
        self.max_blocks_per_seq = -(-max_model_len // block_size)
        self.kv_quant = kv_mode(kv_cache_dtype)
        self.caches = self._allocate(model.kv_cache_spec())
        model.bind_kv_caches(self.caches)
        self.builder = backend.metadata_builder(device, block_size)
        self.graph: GraphRunner = EagerRunner(self._forward)
        self.slots = SlotTable(num_slots, self.max_blocks_per_seq, block_size)
        # Each slot's last sampled token, on the device: a decode step reads its inputs
        # here, so it can be launched before the previous step's tokens reach the host.
        self.last_token = torch.zeros(num_slots, dtype=torch.int64, device=device)
        self.encoder_cache = EncoderCache(num_slots)

    # -- setup ---------------------------------------------------------------
    def _allocate(self, specs) -> list[LayerKV]:
        b = self.backend
        caches = []
        mode = self.kv_quant
        kv_dtype = kv_storage_dtype(mode, self.dtype)
        for s in specs:
            shape = b.kv_cache_shape(self.num_blocks, self.block_size, s.num_kv_heads, kv_stored_dim(mode, s.head_dim))
            k = b.allocate_kv_cache(shape, kv_dtype, self.device)
            v = None
            if s.v_head_dim:
                vshape = b.kv_cache_shape(self.num_blocks, self.block_size, s.num_kv_heads,
                                          kv_stored_dim(mode, s.v_head_dim))
                v = b.allocate_kv_cache(vshape, kv_dtype, self.device)
            meta = {}
            if mode is not None:
                def per_token(fill):
                    return torch.full(shape[:-1], fill, dtype=torch.float32, device=self.device)
                meta = dict(k_scale=per_token(1.0), v_scale=per_token(1.0) if v is not None else None)
                if mode == "int4":
                    meta.update(k_zero=per_token(0.0), v_zero=per_token(0.0) if v is not None else None)
            caches.append(LayerKV(k, v, b.kv_layout, quant=mode, **meta))
        return caches

    def _forward(self, input_ids, positions, meta):
        return self.model(input_ids, positions, meta)

    def captured_runner(self, sizes: list[int]) -> GraphRunner:
        """A graph runner with decode graphs captured for these batch sizes."""
        api = self.backend.graph_api(self.device)
        if api is None:  # a backend without graphs runs every step eagerly
            return EagerRunner(self._forward)
        g = CapturedDecodeRunner(self._forward, api, self.runtime, sizes, self.max_blocks_per_seq,
                                 self.block_size, self.max_model_len)
        with torch.inference_mode():
            g.capture(builder=self.builder)
        return g

    def enable_graphs(self, max_num_seqs: int) -> None:
        self.graph = self.captured_runner(self.backend.graph_capture_sizes(max_num_seqs))

    def _dev(self, a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a)).to(self.device, non_blocking=True)

    # -- a step ----------------------------------------------------------------
    @torch.inference_mode()
    def run_hidden(self, plan: StepPlan) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
        """Apply the plan to the slots and run the model: (hidden [T, H], logit_rows, offsets)."""
        self.slots.apply(plan)
        self.encoder_cache.apply(plan)
        positions, step, logit_rows, offsets = self.slots.step_inputs(plan)
        if plan.tokens is None:
            input_ids = self.last_token.index_select(0, self._dev(plan.slots))
            positions = self.encoder_cache.decode_positions(plan.slots, positions)
        else:
            input_ids = self._dev(plan.tokens)
            mm = self.encoder_cache.prefill_step(plan, positions, self.model, self.device)
            if mm is not None:  # images: run eagerly, with features merged at their token rows
                embeds = None if mm.rows is None else (mm.rows, mm.features)
                meta = self.builder.build(step)
                if mm.spans is not None:
                    meta.bidir_spans = self._dev(mm.spans)
                hidden = self.model(input_ids, self._dev(mm.positions), meta, mm_embeds=embeds)
                return hidden, logit_rows, offsets
        hidden = self.graph.run(input_ids, self._dev(positions), step, self.builder)
        return hidden, logit_rows, offsets

    @torch.inference_mode()
    def run_tokens(self, input_ids: torch.Tensor, positions: np.ndarray, step: StepInputs) -> torch.Tensor:
        """A forward pass with no slot bookkeeping (memory profiling)."""
        return self.graph.run(input_ids, self._dev(positions), step, self.builder)

    @torch.inference_mode()
    def launch(self, plan: StepPlan) -> PendingStep:
        """Queue a step on the device and return without waiting for it."""
        hidden, logit_rows, offsets = self.run_hidden(plan)
        slots = plan.slots[plan.sample]
        if not len(slots):
            return PendingStep([], None, None, None, None)
        logits = self.model.compute_logits(hidden.index_select(0, self._dev(logit_rows)))
        toks, lp, want = self._sample(slots, logits, offsets)
        self.last_token.index_copy_(0, self._dev(slots), toks)
        host = self.runtime.host_buffer(toks.shape, toks.dtype)
        host.copy_(toks, non_blocking=True)
        return PendingStep(slots.tolist(), host, lp, want, self.runtime.record_event())

    def collect(self, p: PendingStep) -> StepOutput:
        """Wait for a launched step and bring its tokens (and log-probabilities) to the host."""
        if not p.slots:
            return StepOutput([], None)
        self.runtime.wait_event(p.event)
        tl = p.host.tolist()
        self.slots.record(p.slots, tl)
        if p.logprobs is None:
            return StepOutput(tl, None)
        chosen, ids, vals = (t.tolist() for t in p.logprobs)
        out = []
        for i, k in enumerate(p.want):
            if k < 0:
                out.append(None)
                continue
            d = {int(t): float(v) for t, v in zip(ids[i][:k], vals[i][:k])}
            d.setdefault(tl[i], chosen[i])
            out.append(d)
        return StepOutput(tl, out)

    def execute(self, plan: StepPlan) -> StepOutput:
        return self.collect(self.launch(plan))

    @torch.inference_mode()
    def all_logits(self, plan: StepPlan) -> torch.Tensor:
        """float32 [T, V]: logits at every token of a (prefill) plan; nothing is sampled."""
        hidden, _, _ = self.run_hidden(plan)
        return self.model.compute_logits(hidden)

    def _sample(self, slots: np.ndarray, logits: torch.Tensor, offsets: np.ndarray):
        """(tokens int64 [n] on the device, logprob tensors or None, logprobs asked per row)."""
        ops, st = self.backend.ops, self.slots
        raw = logits
        if st.penalties and any(s in st.penalties for s in slots.tolist()):
            logits = logits.clone()
            ops.apply_penalties(logits, *st.penalty_inputs(slots, logits.shape[-1], self.device))
        if st.banned:  # min_tokens: EOS/stop ids may not end the completion yet
            for i, s in enumerate(slots.tolist()):
                ids = st.banned.get(s)
                if ids and offsets[i] < st.min_tokens[s]:
                    if logits is raw:
                        logits = logits.clone()
                    logits[i, ids] = float("-inf")
        toks = ops.sample(logits, st.sampling_tensors(slots, offsets, self.device))
        want = st.logprobs[slots]
        if (want < 0).all():
            return toks, None, None
        return toks, top_logprobs(raw, toks, int(want.max())), want.tolist()
