"""One model step: scheduled sequences -> flat token batch -> model -> sampled tokens."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .attention import LayerKV, StepInputs
from .backend import Backend
from .graph import CapturedDecodeRunner, EagerRunner, GraphRunner
from .sampling import build_sampling_tensors, penalty_inputs, top_logprobs
from .scheduler import ScheduledBatch


@dataclass
class StepOutput:
    seqs: list            # the sequences that drew a token this step, in order
    tokens: list[int]
    logprobs: list | None  # per sequence: {token_id: logprob} (sampled token included), or None


def kv_bytes_per_block(specs, block_size: int, dtype: torch.dtype, quantized: bool) -> int:
    elt = 1 if quantized else torch.empty(0, dtype=dtype).element_size()
    total = 0
    for s in specs:
        per_tok = s.num_kv_heads * (s.head_dim + (s.v_head_dim or 0))
        total += block_size * per_tok * elt
        if quantized:  # one float32 scale per token per head for k (and v)
            total += block_size * s.num_kv_heads * 4 * (2 if s.v_head_dim else 1)
    return total


class ModelRunner:
    def __init__(self, model, backend: Backend, device: torch.device, dtype: torch.dtype,
                 block_size: int, num_blocks: int, kv_cache_dtype: str, max_model_len: int):
        self.model = model
        self.backend = backend
        self.device = device
        self.runtime = backend.runtime(device)
        self.dtype = dtype
        self.block_size = block_size
        self.num_blocks = num_blocks
        self.max_model_len = max_model_len
        self.max_blocks_per_seq = -(-max_model_len // block_size)
        self.quantized_kv = kv_cache_dtype == "int8"
        self.caches = self._allocate(model.kv_cache_spec())
        model.bind_kv_caches(self.caches)
        self.builder = backend.metadata_builder(device, block_size)
        self.graph: GraphRunner = EagerRunner(self._forward)
        self.logit_log: list | None = None  # tests set a list to record every step's sampled-row logits

    # -- setup ---------------------------------------------------------------
    def _allocate(self, specs) -> list[LayerKV]:
        b = self.backend
        caches = []
        kv_dtype = torch.int8 if self.quantized_kv else self.dtype
        for s in specs:
            shape = b.kv_cache_shape(self.num_blocks, self.block_size, s.num_kv_heads, s.head_dim)
            k = b.allocate_kv_cache(shape, kv_dtype, self.device)
            v = None
            if s.v_head_dim:
                vshape = b.kv_cache_shape(self.num_blocks, self.block_size, s.num_kv_heads, s.v_head_dim)
                v = b.allocate_kv_cache(vshape, kv_dtype, self.device)
            ks = vs = None
            if self.quantized_kv:
                sshape = shape[:-1]
                ks = torch.ones(sshape, dtype=torch.float32, device=self.device)
                vs = torch.ones(sshape, dtype=torch.float32, device=self.device) if v is not None else None
            caches.append(LayerKV(k, v, b.kv_layout, ks, vs))
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

    # -- a step ----------------------------------------------------------------
    def prepare(self, batch: ScheduledBatch):
        """Host-side inputs of a step: (tokens, positions, StepInputs, sample_mask, logit_rows, offsets).

        offsets[i]: index, among its sequence's outputs, of the token row i draws (for the
        seeded noise and min_tokens); computed from positions so that a step launched
        before the previous step's tokens reached the host (async scheduling) is right.
        """
        seqs, num_new = batch.seqs, batch.num_new
        B = len(seqs)
        bs = self.block_size
        starts = np.fromiter((s.num_computed for s in seqs), dtype=np.int64, count=B)
        width = max(len(s.block_ids) for s in seqs)
        tables = np.zeros((B, width), dtype=np.int32)
        for i, s in enumerate(seqs):
            tables[i, :len(s.block_ids)] = s.block_ids
        prompt_lens = np.fromiter((s.num_prompt for s in seqs), dtype=np.int64, count=B)
        if batch.is_decode:  # fast path: one token per sequence, every row samples
            q_lens = np.ones(B, dtype=np.int32)
            positions = starts
            seq_lens = (starts + 1).astype(np.int32)
            slots = tables[np.arange(B), positions // bs].astype(np.int64) * bs + positions % bs
            tokens = [s.token_ids[-1] for s in seqs] if all(s.num_tokens == s.num_computed + 1 for s in seqs) \
                else None  # None: the tokens are still on the device (async scheduling)
            sample_mask = np.ones(B, dtype=bool)
            logit_rows = np.arange(B)
            offsets = seq_lens - prompt_lens
            return tokens, positions, StepInputs(q_lens, seq_lens, tables, slots, bs), sample_mask, logit_rows, offsets
        q_lens = np.asarray(num_new, dtype=np.int32)
        seq_lens = (starts + q_lens).astype(np.int32)
        tokens: list[int] = []
        for s, st, n in zip(seqs, starts.tolist(), num_new):
            tokens += s.token_ids[st:st + n]
        T = int(q_lens.sum())
        row = np.repeat(np.arange(B), q_lens)
        q_start = np.concatenate(([0], np.cumsum(q_lens)[:-1]))
        positions = np.arange(T) - np.repeat(q_start, q_lens) + np.repeat(starts, q_lens)
        slots = tables[row, positions // bs].astype(np.int64) * bs + positions % bs
        step = StepInputs(q_lens, seq_lens, tables, slots, bs)
        # Rows that complete their sequence's known tokens draw the next token.
        sample_mask = seq_lens == np.fromiter((s.num_tokens for s in seqs), dtype=np.int64, count=B)
        logit_rows = (q_start + q_lens - 1)[sample_mask]
        offsets = (seq_lens - prompt_lens)[sample_mask]
        return tokens, positions, step, sample_mask, logit_rows, offsets

    @torch.inference_mode()
    def launch(self, batch: ScheduledBatch, input_ids: torch.Tensor | None = None) -> "PendingStep":
        """Queue a step on the device and return without waiting for it.

        input_ids: the step's token ids already on the device (the previous step's
        sampled tokens, when the host has not seen them yet).
        """
        tokens, positions, step, sample_mask, logit_rows, offsets = self.prepare(batch)
        if input_ids is None:
            assert tokens is not None, "a decode step whose last tokens are unknown needs input_ids"
            input_ids = torch.tensor(tokens, dtype=torch.int64).to(self.device, non_blocking=True)
        pos_t = torch.from_numpy(positions).to(self.device, non_blocking=True)
        hidden = self.graph.run(input_ids, pos_t, step, self.builder)
        sampled = [s for s, m in zip(batch.seqs, sample_mask) if m]
        if not sampled:
            return PendingStep(batch, [], None, None, None, None)
        rows = torch.from_numpy(logit_rows).to(self.device, non_blocking=True)
        logits = self.model.compute_logits(hidden.index_select(0, rows))
        if self.logit_log is not None:
            self.logit_log.append([(s.request_id, s.index, logits[i].cpu()) for i, s in enumerate(sampled)])
        toks, lp = self._sample(sampled, logits, offsets)
        host = self.runtime.host_buffer(toks.shape, toks.dtype)
        host.copy_(toks, non_blocking=True)
        return PendingStep(batch, sampled, toks, host, lp, self.runtime.record_event())

    def collect(self, p: "PendingStep") -> StepOutput:
        """Wait for a launched step and bring its tokens (and log-probabilities) to the host."""
        if not p.seqs:
            return StepOutput([], [], None)
        self.runtime.wait_event(p.event)
        tl = p.host.tolist()
        if p.logprobs is None:
            return StepOutput(p.seqs, tl, None)
        chosen, ids, vals = (t.tolist() for t in p.logprobs)
        out = []
        for i, s in enumerate(p.seqs):
            k = s.params.logprobs
            if k is None:
                out.append(None)
                continue
            d = {int(t): float(v) for t, v in zip(ids[i][:k], vals[i][:k])}
            d.setdefault(tl[i], chosen[i])
            out.append(d)
        return StepOutput(p.seqs, tl, out)

    def execute(self, batch: ScheduledBatch) -> StepOutput:
        return self.collect(self.launch(batch))

    @torch.inference_mode()
    def all_logits(self, batch: ScheduledBatch) -> torch.Tensor:
        """float32 [T, V]: logits at every token of a (prefill) batch; nothing is sampled."""
        tokens, positions, step, *_ = self.prepare(batch)
        ids_t = torch.tensor(tokens, dtype=torch.int64).to(self.device, non_blocking=True)
        hidden = self.graph.run(ids_t, torch.from_numpy(positions).to(self.device, non_blocking=True), step, self.builder)
        return self.model.compute_logits(hidden)

    def _sample(self, seqs, logits: torch.Tensor, offsets: np.ndarray):
        """(tokens int64 [n] on the device, logprob tensors or None)."""
        ops = self.backend.ops
        raw = logits
        if any(s.params.uses_penalties for s in seqs):
            logits = logits.clone()
            ops.apply_penalties(logits, *penalty_inputs(seqs, logits.shape[-1], self.device))
        for i, s in enumerate(seqs):  # min_tokens: EOS/stop ids may not end the completion yet
            if s.banned_ids and offsets[i] < s.params.min_tokens:
                if logits is raw:
                    logits = logits.clone()
                logits[i, list(s.banned_ids)] = float("-inf")
        st = build_sampling_tensors(seqs, self.device, offsets)
        toks = ops.sample(logits, st)
        want = [s.params.logprobs for s in seqs if s.params.logprobs is not None]
        lp = top_logprobs(raw, toks, max(want)) if want else None
        return toks, lp


@dataclass
class PendingStep:
    """A launched step: its tokens are on their way to ``host`` (ready once ``event`` is)."""

    batch: ScheduledBatch
    seqs: list
    tokens: torch.Tensor | None     # int64 [n] on the device
    host: torch.Tensor | None       # int64 [n] host buffer the tokens are copied into
    logprobs: tuple | None          # device tensors from top_logprobs
    event: object
