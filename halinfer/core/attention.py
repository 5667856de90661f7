"""What one model step tells attention, and how a backend builds it.

A step runs a flat batch of ``T`` tokens drawn from ``B`` sequences.  Sequence
``i`` contributes ``q_lens[i]`` new tokens, at positions
``seq_lens[i] - q_lens[i] .. seq_lens[i] - 1``; its earlier ``seq_lens[i] -
q_lens[i]`` tokens already sit in the paged KV cache.  Decode is the case
``q_lens == 1`` everywhere; a prefill chunk over a cached prefix is the general
case.  Tokens are ordered sequence by sequence.

``StepInputs`` is the host-side (numpy) description the core produces.
``MetadataBuilder.build`` turns it into the ``AttentionMetadata`` the backend's
attention op consumes.  A backend whose kernels want other things (host-side
int32 lengths, cumulative kv lengths, masks) subclasses both.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch


@dataclass
class StepInputs:
    """Host-side description of a step (all numpy, built by the core's runner).

    q_lens        int32 [B]      new tokens per sequence (>= 1)
    seq_lens      int32 [B]      tokens in the KV cache after this step, per sequence
    block_tables  int32 [B, W]   physical block ids; rows padded with 0 past the used blocks
    slot_mapping  int64 [T]      cache slot (block_id * block_size + offset) of each new token;
                                 -1 means "do not store" (padding)
    block_size    int
    """

    q_lens: np.ndarray
    seq_lens: np.ndarray
    block_tables: np.ndarray
    slot_mapping: np.ndarray
    block_size: int

    @property
    def num_seqs(self) -> int:
        return int(self.q_lens.shape[0])

    @property
    def num_tokens(self) -> int:
        return int(self.slot_mapping.shape[0])

    @property
    def is_decode(self) -> bool:
        return bool(self.num_seqs > 0 and (self.q_lens == 1).all())


@dataclass
class AttentionMetadata:
    """What the reference attention op reads.  All tensors on the step's device.

    q_start_loc   int32 [B+1]   cumulative q_lens (sequence i's tokens: q_start_loc[i]:q_start_loc[i+1])
    q_lens        int32 [B]
    seq_lens      int32 [B]     KV length per sequence including this step's tokens
    block_tables  int32 [B, W]
    slot_mapping  int64 [T]     -1 = skip
    max_q_len, max_seq_len      host ints (upper bounds; graph runners may set them to capacity)
    is_decode                   every q_len is 1
    bidir_spans   int32 [T, 2]  or None: per token, keys [start, end) it also sees both ways
                                (Gemma 3's images); the runner sets it on eager prefill steps only
    """

    num_seqs: int
    num_tokens: int
    block_size: int
    max_q_len: int
    max_seq_len: int
    is_decode: bool
    q_start_loc: torch.Tensor
    q_lens: torch.Tensor
    seq_lens: torch.Tensor
    block_tables: torch.Tensor
    slot_mapping: torch.Tensor
    # not a dataclass field (plugins' metadata subclasses add fields without defaults)
    bidir_spans = None

    def tensors(self) -> dict[str, torch.Tensor]:
        return {f.name: getattr(self, f.name) for f in fields(self) if isinstance(getattr(self, f.name), torch.Tensor)}

    def copy_into(self, static: "AttentionMetadata") -> None:
        """Update a captured graph's metadata in place (shapes must already match)."""
        for name, t in self.tensors().items():
            dst = getattr(static, name)
            if dst.data_ptr() != t.data_ptr():
                dst.copy_(t, non_blocking=True)


class MetadataBuilder:
    """Builds AttentionMetadata for one backend.  Vectorized: no per-sequence loop."""

    metadata_cls = AttentionMetadata

    def __init__(self, device: torch.device, block_size: int):
        self.device = device
        self.block_size = block_size

    def _dev(self, a: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
        # One host->device copy per field; a backend with pinned staging overrides this.
        # non_blocking: a blocking copy would wait for the device queue to drain, and an
        # async-scheduled step is queued behind the previous one (the source is staged
        # at once, so the numpy array may be reused).
        # copy=True: on a CPU device .to() would otherwise alias the step's numpy array,
        # which the runner may refill for the next step.
        return torch.from_numpy(np.ascontiguousarray(a)).to(device=self.device, dtype=dtype, copy=True,
                                                           non_blocking=True)

    def build(self, step: StepInputs) -> AttentionMetadata:
        q_start = np.zeros(step.num_seqs + 1, dtype=np.int32)
        np.cumsum(step.q_lens, out=q_start[1:])
        return self.metadata_cls(
            num_seqs=step.num_seqs,
            num_tokens=step.num_tokens,
            block_size=step.block_size,
            max_q_len=int(step.q_lens.max()) if step.num_seqs else 0,
            max_seq_len=int(step.seq_lens.max()) if step.num_seqs else 0,
            is_decode=step.is_decode,
            q_start_loc=self._dev(q_start, torch.int32),
            q_lens=self._dev(step.q_lens, torch.int32),
            seq_lens=self._dev(step.seq_lens, torch.int32),
            block_tables=self._dev(step.block_tables, torch.int32),
            slot_mapping=self._dev(step.slot_mapping, torch.int64),
        )


@dataclass
class LayerKV:
    """One attention layer's slice of the paged KV cache.

    k, v      the caches in the backend's layout ("NHD": [num_blocks, block_size, Hk, D],
              "HND": [num_blocks, Hk, block_size, D]).  ``v`` is None for MLA, whose
              single cache holds the compressed latent and the rope key per token
              (Hk = 1, D = kv_lora_rank + rope_dim); values are its first v_head_dim channels.
    k_scale,  float32 per-token-per-head scales ([num_blocks, block_size, Hk] for NHD,
    v_scale   [num_blocks, Hk, block_size] for HND) when the cache is quantized; else None.
    k_zero,   float32 zeros of the same shape for an int4 cache; else None.
    v_zero
    layout    "NHD" or "HND"
    quant     None, "int8", "fp8" or "int4" (core/ops/kv_quant.py: storage and dequantization;
              an int4 cache is uint8 with D/2 bytes per (token, head)).  Scales without a
              mode mean int8, as before the other modes existed.
    """

    k: torch.Tensor
    v: torch.Tensor | None
    layout: str = "NHD"
    k_scale: torch.Tensor | None = None
    v_scale: torch.Tensor | None = None
    quant: str | None = None
    k_zero: torch.Tensor | None = None
    v_zero: torch.Tensor | None = None

    def __post_init__(self):
        if self.quant is None and self.k_scale is not None:
            self.quant = "int8"
        assert (self.quant is None) == (self.k_scale is None), "a quantized KV cache needs scales, and only it"
        assert (self.quant == "int4") == (self.k_zero is not None), "an int4 KV cache needs zeros, and only it"

    @property
    def quantized(self) -> bool:
        return self.quant is not None

    @property
    def head_dim(self) -> int:
        """Channels per (token, head) of the key cache, unpacked."""
        return self.k.shape[-1] * (2 if self.quant == "int4" else 1)

    @property
    def block_size(self) -> int:
        return self.k.shape[1] if self.layout == "NHD" else self.k.shape[2]
