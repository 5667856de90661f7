"""What the core needs of a model, and how a worker is told to build one.

The core imports no model family: a model is anything with this shape,
and the front end hands the worker a ``ModelSpec`` whose ``factory`` (a module-level
function, so it pickles into worker processes) builds and loads it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, Protocol

import torch

from .attention import AttentionMetadata, LayerKV


@dataclass(frozen=True)
class KVSpec:
    """Per attention layer: what its KV cache holds."""

    num_kv_heads: int
    head_dim: int
    v_head_dim: int | None   # None: no separate value cache (MLA latent)


class CausalModel(Protocol):
    """A decoder the worker can run: one step maps (tokens, positions, metadata) to hidden states."""

    def kv_cache_spec(self) -> list[KVSpec]:
        """One entry per attention layer, in the order bind_kv_caches takes them."""

    def bind_kv_caches(self, caches: list[LayerKV]) -> None:
        """Give each attention layer its slice of the paged cache."""

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor, meta: AttentionMetadata) -> torch.Tensor:
        """int64 [T], int64 [T] -> hidden [T, H]."""

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden rows [n, H] -> float32 logits [n, vocab]."""

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> set[str]:
        """Copy checkpoint tensors in; returns the parameter names loaded."""


@dataclass
class ModelSpec:
    """Everything a worker needs to build the model on its device (picklable)."""

    checkpoint: str                 # what open_checkpoint() takes
    architecture: str
    dtype: torch.dtype
    quant: dict | None
    max_model_len: int
    vocab_size: int
    load_format: str = "auto"       # "auto" (the checkpoint's weights) or "dummy" (random)
    seed: int = 0
    expert_parallel: bool = False   # MoE with several ranks: split the experts, not each expert
    # factory(spec, ops, device, tp=TPGroup) -> CausalModel (this rank's shard).  Module-level,
    # so it pickles by reference.
    factory: Callable[..., CausalModel] | None = None
    extra: dict = field(default_factory=dict)
