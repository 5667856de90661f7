"""Building blocks shared by the model families, written only against ``Ops``.

Every layer keeps a reference to the backend's ``Ops`` table (``ctx.ops``) and
calls it for anything a device may accelerate; plain torch is used only for
what every device does the same way (embedding lookup, reshapes, adds).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ..core.attention import AttentionMetadata, LayerKV
from ..core.distributed import SINGLE, TPGroup
from ..core.model_protocol import KVSpec
from ..core.ops import ActQuant, Ops
from ..core.ops.deferred import GatedInput, deferred
from .quant_linear import add_weight_placeholder, load_into, make_method
from .rope import RopeSpec, build_cos_sin_cache


@dataclass
class ModelContext:
    """What a model needs from the engine while it is being built."""

    ops: Ops
    dtype: torch.dtype
    device: torch.device
    quant: dict | None = None          # core/quant_config.py's spec: {"method": "awq"|"gptq"|"w8a8"|"fp8", ...}
    max_model_len: int = 4096
    kv_specs: list = field(default_factory=list)   # filled by Attention layers as they are built
    tp: TPGroup = SINGLE               # this rank's tensor-parallel group (models/parallel.py shards by it)
    expert_parallel: bool = False      # MoE: experts split across the ranks instead of each expert sharded

    @property
    def tp_rank(self) -> int:
        return self.tp.rank

    @property
    def tp_size(self) -> int:
        return self.tp.size


# ---------------------------------------------------------------------------
# Linear layers.  ``out_sizes`` lists the output widths of the logical matrices a
# merged layer holds (e.g. q, k, v): checkpoints load them one shard at a time.
# ---------------------------------------------------------------------------
class Linear(nn.Module):
    """x @ W^T + b, W in the checkpoint's format: a method object per format
    (models/quant_linear.py) creates, loads and runs the parameters."""

    def __init__(self, ctx: ModelContext, in_features: int, out_sizes: list[int] | int, bias: bool = False,
                 quantize: bool = True):
        super().__init__()
        self.ops = ctx.ops
        self.dtype = ctx.dtype
        self.in_features = in_features
        self.out_sizes = [out_sizes] if isinstance(out_sizes, int) else list(out_sizes)
        self.out_features = sum(self.out_sizes)
        self.qm = make_method(ctx.quant if quantize else None)
        self.method = self.qm.name
        self.loaded_quant_shards: set[int] = set()
        self.qm.create(self, ctx.dtype)
        add_weight_placeholder(self)
        self.bias = nn.Parameter(torch.empty(self.out_features, dtype=ctx.dtype), requires_grad=False) if bias else None

    def shard_range(self, shard: int, packed: int = 1) -> tuple[int, int]:
        start = sum(self.out_sizes[:shard])
        return start // packed, (start + self.out_sizes[shard]) // packed

    def fills(self, name: str) -> tuple[str, ...]:
        """The parameters checkpoint tensor ``name`` fills: itself, unless the format names its
        tensors otherwise than the parameters it loads them into, or implies one (compressed-tensors
        pack-quantized: models/quant_linear.py)."""
        return getattr(self.qm, "checkpoint_names", {}).get(name, (name,))

    def load(self, param_name: str, tensor: torch.Tensor, shard: int = 0, source: str | None = None) -> None:
        """Copy one checkpoint tensor (for logical matrix ``shard``) into place, through the
        layer's format method.  ``source`` (the checkpoint tensor's name) is named when the
        shape does not fit: copy_ would broadcast a [N] into [N, K] silently."""
        if self.qm.name is None and param_name in ("weight", "bias"):
            a, b = self.shard_range(shard)
            want = (b - a,) + tuple(getattr(self, param_name).shape[1:])
            if tuple(tensor.shape) != want:
                raise ValueError(f"checkpoint tensor {source or param_name!r} has shape {tuple(tensor.shape)}, "
                                 f"the model expects {want} (check the config's head and size fields)")
        try:
            load_into(self, param_name, tensor, shard)
        except RuntimeError as e:  # a quantized tensor of the wrong shape
            raise ValueError(f"checkpoint tensor {source or param_name!r} (shape {tuple(tensor.shape)}) does not "
                             f"fit {type(self).__name__}.{param_name}: {e}") from None
        self.method = self.qm.name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.matmul(x, self.bias)

    def matmul(self, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """x @ W^T + bias (a row-parallel layer passes the bias on one rank only)."""
        return self.qm.apply(self, x, bias)


class RMSNorm(nn.Module):
    def __init__(self, ctx: ModelContext, size: int, eps: float):
        super().__init__()
        self.ops = ctx.ops
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(size, dtype=ctx.dtype), requires_grad=False)
        # set by models/norm_quant_plan.py where this norm feeds only linears that quantize
        # their input this way: forward then returns their QuantizedActs instead of y
        self.quant: ActQuant | None = None
        # set by models/norm_quant_plan.py where this norm feeds one AWQ linear only: at batch 1
        # (latency-bound) forward then leaves the norm to that linear's GEMV (core/ops/deferred.py)
        self.defer = False

    def forward(self, x, residual=None):
        if self.defer and residual is not None and x.dim() == 2 and x.shape[0] == 1:
            return deferred(x, residual, self.weight, self.eps)
        if self.quant is not None:
            return self.ops.rms_norm_quant(x, self.weight, self.eps, self.quant, residual)
        return self.ops.rms_norm(x, self.weight, self.eps, residual)


class LayerNorm(nn.Module):
    def __init__(self, ctx: ModelContext, size: int, eps: float, bias: bool = True):
        super().__init__()
        self.ops = ctx.ops
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(size, dtype=ctx.dtype), requires_grad=False)
        self.bias = nn.Parameter(torch.zeros(size, dtype=ctx.dtype), requires_grad=False) if bias else None

    def forward(self, x, residual=None):
        return self.ops.layer_norm(x, self.weight, self.bias, self.eps, residual)


class Embedding(nn.Module):
    def __init__(self, ctx: ModelContext, vocab: int, hidden: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(vocab, hidden, dtype=ctx.dtype), requires_grad=False)

    def forward(self, ids):
        return nn.functional.embedding(ids, self.weight)


class Rotary(nn.Module):
    """Holds the float32 cos/sin table and applies it through Ops.rotary."""

    def __init__(self, ctx: ModelContext, spec: RopeSpec):
        super().__init__()
        self.ops = ctx.ops
        self.is_neox = spec.is_neox
        length = max(ctx.max_model_len, spec.max_position)
        self.register_buffer("cos_sin", build_cos_sin_cache(spec, length), persistent=False)

    def forward(self, positions, q, k):
        return self.ops.rotary(q, k, positions, self.cos_sin, self.is_neox)

    def plain(self, positions) -> bool:
        """Whether forward(positions, ...) is Ops.rotary with this table: then Attention may rotate
        in its store (Ops.rotary_store_kv)."""
        return True


class Attention(nn.Module):
    """Stores this step's k/v into the layer's paged cache and attends over it.

    q: [T, Hq*D], k: [T, Hk*D], v: [T, Hk*Dv] -> [T, Hq*Dv].  Rotary is applied by the caller, or
    here with rope=(rotary, positions) where rotary.plain(positions): in one op with the store.
    """

    def __init__(self, ctx: ModelContext, num_heads: int, num_kv_heads: int, head_dim: int, scale: float,
                 v_head_dim: int | None = None, **attn_kw):
        super().__init__()
        self.ops = ctx.ops
        self.num_heads, self.num_kv_heads, self.head_dim = num_heads, num_kv_heads, head_dim
        self.v_head_dim = v_head_dim or head_dim
        self.scale = scale
        self.attn_kw = {k: v for k, v in attn_kw.items() if v is not None}
        self.layer_index = len(ctx.kv_specs)
        ctx.kv_specs.append(KVSpec(num_kv_heads, head_dim, self.v_head_dim))
        self.kv: LayerKV | None = None  # bound by the runner once the cache exists

    def forward(self, q, k, v, meta: AttentionMetadata, rope: tuple[Rotary, torch.Tensor] | None = None):
        T = q.shape[0]
        q = q.view(T, self.num_heads, self.head_dim)
        k = k.view(T, self.num_kv_heads, self.head_dim)
        v = v.view(T, self.num_kv_heads, self.v_head_dim)
        if rope is None:
            self.ops.store_kv(k, v, self.kv, meta.slot_mapping)
        else:
            rot, positions = rope
            q = self.ops.rotary_store_kv(q, k, v, positions, rot.cos_sin, rot.is_neox, self.kv, meta.slot_mapping)
        spans = getattr(meta, "bidir_spans", None)
        kw = self.attn_kw if spans is None else {**self.attn_kw, "bidir_spans": spans}
        o = self.ops.paged_attention(q, self.kv, meta, scale=self.scale, **kw)
        return o.reshape(T, self.num_heads * self.v_head_dim)


class GatedMLP(nn.Module):
    """down(act(gate(x)) * up(x)) with gate and up merged into one GEMM."""

    def __init__(self, ctx: ModelContext, hidden: int, intermediate: int, act: str = "silu", bias: bool = False,
                 reduce: bool = True):
        from .parallel import ColumnParallelLinear, RowParallelLinear  # parallel.py builds on this module

        super().__init__()
        self.ops = ctx.ops
        self.act = act
        self.gate_up_proj = ColumnParallelLinear(ctx, hidden, [intermediate, intermediate], bias=bias,
                                                 what="intermediate_size")
        self.down_proj = RowParallelLinear(ctx, intermediate, hidden, bias=bias, reduce=reduce,
                                           what="intermediate_size")
        # set by models/norm_quant_plan.py where down_proj quantizes its input this way: the
        # activation then returns that quantization (one launch) instead of its float output
        self.down_quant: ActQuant | None = None
        # set by models/norm_quant_plan.py where down_proj is AWQ: at batch 1 the activation is
        # left to down_proj's GEMV (core/ops/deferred.py)
        self.defer_act = False

    def input_linears(self) -> list[Linear]:
        """forward reads x only through these (models/norm_quant_plan.py)."""
        return [self.gate_up_proj]

    def forward(self, x):
        h = self.gate_up_proj(x)
        if self.defer_act and h.dim() == 2 and h.shape[0] == 1:
            return self.down_proj(GatedInput(h, self.act))
        if self.down_quant is None:
            return self.down_proj(self.ops.act_and_mul(h, self.act))
        y = self.down_proj(self.ops.act_and_mul_quant(h, self.act, self.down_quant))
        # the quantized activations are [T, I]: restore any leading dims h had
        return y if h.dim() == 2 else y.view(*h.shape[:-1], y.shape[-1])


class MLP(nn.Module):
    """Non-gated: c_proj(act(c_fc(x))).  GPT-2 / StarCoder2 names (``up_proj`` would be
    taken for half of a gated MLP by CausalLM.stacked)."""

    def __init__(self, ctx: ModelContext, hidden: int, intermediate: int, act: str = "gelu_tanh", bias: bool = True):
        from .parallel import ColumnParallelLinear, RowParallelLinear  # parallel.py builds on this module

        super().__init__()
        self.ops = ctx.ops
        self.act = act
        self.c_fc = ColumnParallelLinear(ctx, hidden, intermediate, bias=bias, what="intermediate_size")
        self.c_proj = RowParallelLinear(ctx, intermediate, hidden, bias=bias, what="intermediate_size")

    def forward(self, x):
        return self.c_proj(self.ops.act(self.c_fc(x), self.act))


def hf_activation(name: str) -> str:
    """Map an HF ``hidden_act`` to the name Ops.act_and_mul takes."""
    name = (name or "silu").lower()
    if name in ("silu", "swish"):
        return "silu"
    if name in ("gelu", "gelu_new_exact"):
        return "gelu"
    if name in ("gelu_pytorch_tanh", "gelu_new", "gelu_fast", "gelu_tanh"):
        return "gelu_tanh"
    if name == "quick_gelu":
        return "quick_gelu"
    raise ValueError(f"unsupported activation {name!r}; supported: silu, gelu, gelu_pytorch_tanh, quick_gelu")
