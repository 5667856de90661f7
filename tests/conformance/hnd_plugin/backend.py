"""The HND test device: descriptor, and metadata carrying host-side int32 lengths."""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch

from halinfer.core.attention import AttentionMetadata, MetadataBuilder, StepInputs
from halinfer.core.backend import Backend


@dataclass
class HostLenMetadata(AttentionMetadata):
    """The core's metadata plus what this device's attention reads instead:
    host_seq_lens  CPU int32 tensor [B]  (a kernel argument, like Ascend's actual_seq_lengths)
    host_q_lens    python list of int [B]
    """

    host_seq_lens: torch.Tensor | None = None
    host_q_lens: list[int] | None = None


class HostLenBuilder(MetadataBuilder):
    metadata_cls = HostLenMetadata

    def build(self, step: StepInputs) -> HostLenMetadata:
        meta = super().build(step)
        meta.host_seq_lens = torch.from_numpy(np.array(step.seq_lens, dtype=np.int32))   # a copy: no alias
        meta.host_q_lens = [int(n) for n in step.q_lens]
        return meta


class HndBackend(Backend):
    name = "hndsim"
    aliases = ("hnd",)
    description = "test-only: HND KV layout, host-side int32 lengths, own metadata builder"
    device_type = "cpu"
    priority = -100                      # never chosen by device="auto"
    kv_layout = "HND"
    block_sizes = (16, 32, 64)
    default_block_size = 16
    kv_cache_dtypes = ("auto", "int8")
    dtypes = (torch.float32, torch.float16, torch.bfloat16)
    weight_quant = ("awq", "w8a8")

    def available(self):
        return True, "ok"

    @functools.cached_property
    def ops(self):
        from .ops import HndOps   # lazily, as a vendor imports its kernels on first use

        return HndOps()

    def metadata_builder(self, device, block_size):
        return HostLenBuilder(device, block_size)
