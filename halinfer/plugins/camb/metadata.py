"""Attention metadata as torch_mlu_ops takes it (vendors/camb.md §2): everything on
the device, int32: cumulative query and KV lengths (B+1), KV lengths, block tables,
slots.  No host-side lists, so captured graphs need no refresh (§8)."""
from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch

from halinfer.core.attention import AttentionMetadata, MetadataBuilder, StepInputs


@dataclass
class CambMetadata(AttentionMetadata):
    """The core's fields (slot_mapping int32: TMO's reshape_paged_cache asserts int32),
    plus cu_seqlens_kv int32 [B+1]: cumulative KV lengths (paged flash_attention)."""

    cu_seqlens_kv: torch.Tensor


class CambMetadataBuilder(MetadataBuilder):
    metadata_cls = AttentionMetadata

    def build(self, step: StepInputs) -> CambMetadata:
        base = super().build(step)
        kw = {f.name: getattr(base, f.name) for f in fields(base)}
        kw["slot_mapping"] = self._dev(step.slot_mapping, torch.int32)
        cu_kv = np.zeros(step.num_seqs + 1, dtype=np.int32)
        np.cumsum(step.seq_lens, out=cu_kv[1:])
        return CambMetadata(**kw, cu_seqlens_kv=self._dev(cu_kv, torch.int32))
