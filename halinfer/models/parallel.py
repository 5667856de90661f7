"""The parallel-linear vocabulary every family shards through (Megatron-style).

- ``ColumnParallelLinear``: the output channels split across ranks; each logical
  matrix of a merged layer (gate|up) is split on its own, so rank r holds
  [gate_r | up_r].  No communication: its output feeds a row-parallel layer.
- ``QKVParallelLinear``: q|k|v split by heads; when there are fewer KV heads than
  ranks each KV head is replicated on tensor_parallel_size / num_kv_heads ranks.
- ``RowParallelLinear``: the input channels split; partial outputs are summed by an
  all-reduce (or left partial, ``reduce=False``, for a caller that sums several).
  The bias is added on rank 0 only, so it is counted once.
- ``VocabParallelEmbedding`` / ``ParallelLMHead``: the vocabulary split in equal
  (padded) ranges; a lookup masks ids outside the range and all-reduces; the head
  all-gathers its logits and drops the padding.

Each layer loads a full checkpoint tensor by slicing out its rank's part
(``ColumnParallelLinear.load`` and friends), one tensor at a time, so a rank never
holds more than its shard plus the tensor being read.  With one rank each is the
plain layer it extends.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..core.distributed import TPGroup, split_evenly
from .fused import output_rows
from .layers import Embedding, Linear, ModelContext


@dataclass(frozen=True)
class Part:
    """The checkpoint rows of one logical matrix that this rank holds."""

    full: int     # rows in the checkpoint
    start: int    # first row held
    size: int     # rows held (may run past ``full`` only for padding, which stays zero)


def even_part(full: int, tp: TPGroup, what: str) -> Part:
    start, n = split_evenly(full, tp.size, tp.rank, what)
    return Part(full, start, n)


def padded_part(full: int, tp: TPGroup) -> Part:
    """An equal share of ``full`` rows after padding to a multiple of the ranks (vocabularies)."""
    n = -(-full // tp.size)
    return Part(full, tp.rank * n, n)


def narrow_padded(t: torch.Tensor, dim: int, start: int, size: int) -> torch.Tensor:
    """t's rows [start, start+size) along dim, zero rows where that runs past the end."""
    have = max(0, min(size, t.shape[dim] - start))
    piece = t.narrow(dim, min(start, t.shape[dim]), have)
    if have == size:
        return piece
    pad = list(t.shape)
    pad[dim] = size - have
    return torch.cat((piece, t.new_zeros(pad)), dim=dim)


@dataclass(frozen=True)
class HeadSplit:
    """Attention heads on this rank: q heads [q_start, q_start+heads), KV heads likewise."""

    heads: int
    kv_heads: int
    q_start: int
    kv_start: int


def split_heads(tp: TPGroup, num_heads: int, num_kv_heads: int) -> HeadSplit:
    q_start, h = split_evenly(num_heads, tp.size, tp.rank, "num_attention_heads")
    if num_kv_heads >= tp.size:
        kv_start, hk = split_evenly(num_kv_heads, tp.size, tp.rank, "num_key_value_heads")
    elif tp.size % num_kv_heads == 0:
        # Fewer KV heads than ranks: each is replicated; rank r's q heads all map to KV head
        # q_start // (num_heads / num_kv_heads) = r // (size / num_kv_heads).
        kv_start, hk = tp.rank // (tp.size // num_kv_heads), 1
    else:
        raise ValueError(f"num_key_value_heads ({num_kv_heads}) and tensor_parallel_size={tp.size}: one must "
                         f"divide the other (KV heads are split, or replicated when fewer than the ranks)")
    return HeadSplit(h, hk, q_start, kv_start)


class ColumnParallelLinear(Linear):
    """out_sizes as Linear takes them (full widths); ``parts`` overrides the even split."""

    def __init__(self, ctx: ModelContext, in_features: int, out_sizes: list[int] | int, bias: bool = False,
                 quantize: bool = True, parts: list[Part] | None = None, what: str = "output features"):
        tp = ctx.tp
        sizes = [out_sizes] if isinstance(out_sizes, int) else list(out_sizes)
        self_parts = parts if parts is not None else [even_part(s, tp, what) for s in sizes]
        super().__init__(ctx, in_features, [p.size for p in self_parts], bias=bias, quantize=quantize)
        self.tp = tp
        self.parts = self_parts
        self.quant = ctx.quant if quantize else None

    def load(self, param_name: str, tensor: torch.Tensor, shard: int = 0, source: str | None = None) -> None:
        if self.tp.is_parallel:
            p = self.parts[shard]
            rows = output_rows(param_name, tensor, p.full, self.quant)
            if rows is not None:        # else the same tensor for every rank (g_idx, a per-tensor scale)
                tensor, dim, pack = rows
                assert p.start % pack == 0 and p.size % pack == 0, f"{param_name}: shard not aligned to packs of {pack}"
                tensor = narrow_padded(tensor, dim, p.start // pack, p.size // pack)
        super().load(param_name, tensor, shard, source)


class QKVParallelLinear(ColumnParallelLinear):
    def __init__(self, ctx: ModelContext, hidden: int, head_dim: int, num_heads: int, num_kv_heads: int,
                 bias: bool = False, v_head_dim: int | None = None):
        s = split_heads(ctx.tp, num_heads, num_kv_heads)
        D, Dv = head_dim, v_head_dim or head_dim
        parts = [Part(num_heads * D, s.q_start * D, s.heads * D),
                 Part(num_kv_heads * D, s.kv_start * D, s.kv_heads * D),
                 Part(num_kv_heads * Dv, s.kv_start * Dv, s.kv_heads * Dv)]
        super().__init__(ctx, hidden, [p.full for p in parts], bias=bias, parts=parts)
        self.heads = s


# Where the input (K) dimension of each Linear parameter sits, and how many K values one
# stored element covers (AWQ keeps K/group rows of zeros and scales).
def _input_dim(param_name: str, layer: Linear) -> tuple[int | None, int]:
    if param_name == "qweight":
        return 0, 1
    if param_name in ("qzeros", "scales"):
        return 0, layer.qm.group
    if param_name == "weight":
        return 1, 1
    return None, 1      # bias, weight_scale: per output channel, not split


class RowParallelLinear(Linear):
    def __init__(self, ctx: ModelContext, in_features: int, out_features: int, bias: bool = False,
                 quantize: bool = True, reduce: bool = True, what: str = "input features"):
        tp = ctx.tp
        self.part = even_part(in_features, tp, what)
        super().__init__(ctx, self.part.size, out_features, bias=bias, quantize=quantize)
        self.tp = tp
        self.reduce = reduce
        if tp.is_parallel and self.method == "awq" and self.part.size % self.qm.group:
            raise ValueError(f"an input shard of {self.part.size} channels is not a whole number of AWQ groups "
                             f"({self.qm.group}); use a tensor_parallel_size that keeps groups whole")

    def load(self, param_name: str, tensor: torch.Tensor, shard: int = 0, source: str | None = None) -> None:
        if self.tp.is_parallel:
            dim, per = _input_dim(param_name, self)
            if dim is not None:
                tensor = tensor.narrow(dim, self.part.start // per, self.part.size // per)
        super().load(param_name, tensor, shard, source)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.tp.is_parallel:
            return super().forward(x)
        y = self.matmul(x, self.bias if self.tp.rank == 0 else None)
        return self.tp.all_reduce(y) if self.reduce else y


class VocabParallelEmbedding(Embedding):
    def __init__(self, ctx: ModelContext, vocab: int, hidden: int):
        self.tp = ctx.tp
        self.part = padded_part(vocab, ctx.tp)
        super().__init__(ctx, self.part.size, hidden)

    def load(self, param_name: str, tensor: torch.Tensor, shard: int = 0, source: str | None = None) -> None:
        assert param_name == "weight", param_name
        if tensor.shape[0] != self.part.full:
            raise ValueError(f"embedding has {tensor.shape[0]} rows, the config's vocabulary is {self.part.full}")
        self.weight.data.copy_(narrow_padded(tensor, 0, self.part.start, self.part.size))

    def forward(self, ids):
        if not self.tp.is_parallel:
            return super().forward(ids)
        local = ids - self.part.start
        inside = (local >= 0) & (local < self.part.size)
        x = nn.functional.embedding(local.masked_fill(~inside, 0), self.weight)
        return self.tp.all_reduce(x.masked_fill(~inside[:, None], 0))


class ParallelLMHead(ColumnParallelLinear):
    """Logits of this rank's vocabulary range, gathered into [n, vocab] on every rank."""

    def __init__(self, ctx: ModelContext, hidden: int, vocab: int, bias: bool = False):
        super().__init__(ctx, hidden, vocab, bias=bias, quantize=False, parts=[padded_part(vocab, ctx.tp)])
        self.vocab = vocab
        self.weight.data.zero_()  # padding rows stay zero (loads fill the rest)

    def forward(self, x):
        y = super().forward(x)
        if not self.tp.is_parallel:
            return y
        return self.tp.all_gather(y, dim=-1)[..., :self.vocab]
