"""Attention metadata in the form Ascend's attention ops take it.

FIA (vendors/ascend.md §3.1) reads sequence lengths from host-side SymInt[]
lists: ``actual_seq_lengths`` (TND: cumulative query ends; BSND: per-sequence
query lengths) and ``actual_seq_lengths_kv`` (per-sequence KV lengths).  Block
tables and slots are int32 device tensors (§2, §11).  Everything is computed
with numpy over the whole batch: no per-sequence Python loop.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from halinfer.core.attention import AttentionMetadata, MetadataBuilder, StepInputs


@dataclass
class AscendMetadata(AttentionMetadata):
    """The core's fields, plus host-side lengths.

    slot_mapping  is int32 here (ATB's reshape_and_cache takes int32; the core's
                  reference ops accept either).
    q_cum_host    [B] cumulative query ends (FIA TND actual_seq_lengths)
    q_lens_host   [B] query lengths (FIA BSND actual_seq_lengths, ATB seq_len)
    kv_lens_host  [B] KV lengths incl. this step's tokens (FIA actual_seq_lengths_kv)
    pad_index     int64 [T] device: row of each token in a [B * max_q_len] padded
                  batch (BSND prefill); None for decode steps
    has_history   some sequence attends to cached tokens besides its new ones
    """

    q_cum_host: list[int]
    q_lens_host: list[int]
    kv_lens_host: list[int]
    pad_index: torch.Tensor | None
    has_history: bool

    def copy_into(self, static: "AscendMetadata") -> None:
        """Tensors in place (captured graphs read them), host lists by value: a graph
        froze the old ones at capture, and the graph API re-issues them (graph.py)."""
        super().copy_into(static)
        static.q_cum_host = list(self.q_cum_host)
        static.q_lens_host = list(self.q_lens_host)
        static.kv_lens_host = list(self.kv_lens_host)
        static.has_history = self.has_history


class AscendMetadataBuilder(MetadataBuilder):
    metadata_cls = AscendMetadata

    def build(self, step: StepInputs) -> AscendMetadata:
        q_lens = np.asarray(step.q_lens, dtype=np.int64)
        seq_lens = np.asarray(step.seq_lens, dtype=np.int64)
        B, T = step.num_seqs, step.num_tokens
        q_cum = np.cumsum(q_lens)
        pad_index = None
        if not step.is_decode and B:
            # token t of sequence b (local index l) -> row b * max_q + l of the padded batch
            max_q = int(q_lens.max())
            starts = q_cum - q_lens
            seq_of = np.repeat(np.arange(B), q_lens)
            local = np.arange(T) - np.repeat(starts, q_lens)
            pad_index = self._dev(seq_of * max_q + local, torch.int64)
        q_start = np.zeros(B + 1, dtype=np.int32)
        q_start[1:] = q_cum
        base = dict(
            num_seqs=B,
            num_tokens=T,
            block_size=step.block_size,
            max_q_len=int(q_lens.max()) if B else 0,
            max_seq_len=int(seq_lens.max()) if B else 0,
            is_decode=step.is_decode,
            q_start_loc=self._dev(q_start, torch.int32),
            q_lens=self._dev(step.q_lens, torch.int32),
            seq_lens=self._dev(step.seq_lens, torch.int32),
            block_tables=self._dev(step.block_tables, torch.int32),
            slot_mapping=self._dev(step.slot_mapping, torch.int32),
        )
        return AscendMetadata(
            **base,
            q_cum_host=q_cum.tolist(),
            q_lens_host=q_lens.tolist(),
            kv_lens_host=seq_lens.tolist(),
            pad_index=pad_index,
            has_history=bool((seq_lens > q_lens).any()),
        )

