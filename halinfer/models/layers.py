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
from ..core.model_protocol import KVSpec
from ..core.ops import Ops
from .rope import RopeSpec, build_cos_sin_cache


@dataclass
class ModelContext:
    """What a model needs from the engine while it is being built."""

    ops: Ops
    dtype: torch.dtype
    device: torch.device
    quant: dict | None = None          # {"method": "awq"|"w8a8", "group_size": ...}
    max_model_len: int = 4096
    kv_specs: list = field(default_factory=list)   # filled by Attention layers as they are built


# ---------------------------------------------------------------------------
# Linear layers.  ``out_sizes`` lists the output widths of the logical matrices a
# merged layer holds (e.g. q, k, v): checkpoints load them one shard at a time.
# ---------------------------------------------------------------------------
class Linear(nn.Module):
    def __init__(self, ctx: ModelContext, in_features: int, out_sizes: list[int] | int, bias: bool = False,
                 quantize: bool = True):
        super().__init__()
        self.ops = ctx.ops
        self.in_features = in_features
        self.out_sizes = [out_sizes] if isinstance(out_sizes, int) else list(out_sizes)
        self.out_features = sum(self.out_sizes)
        self.method = (ctx.quant or {}).get("method") if quantize else None
        n, k = self.out_features, in_features
        if self.method is None:
            self.weight = nn.Parameter(torch.empty(n, k, dtype=ctx.dtype), requires_grad=False)
        elif self.method == "awq":
            g = ctx.quant["group_size"]
            self.group_size = g
            self.qweight = nn.Parameter(torch.empty(k, n // 8, dtype=torch.int32), requires_grad=False)
            self.qzeros = nn.Parameter(torch.empty(-(-k // g), n // 8, dtype=torch.int32), requires_grad=False)
            self.scales = nn.Parameter(torch.empty(-(-k // g), n, dtype=ctx.dtype), requires_grad=False)
        elif self.method == "w8a8":
            self.weight = nn.Parameter(torch.empty(n, k, dtype=torch.int8), requires_grad=False)
            self.weight_scale = nn.Parameter(torch.empty(n, dtype=torch.float32), requires_grad=False)
        else:
            raise ValueError(f"unknown quantization method {self.method!r}; supported: awq, w8a8")
        self.bias = nn.Parameter(torch.empty(n, dtype=ctx.dtype), requires_grad=False) if bias else None

    def shard_range(self, shard: int, packed: int = 1) -> tuple[int, int]:
        start = sum(self.out_sizes[:shard])
        return start // packed, (start + self.out_sizes[shard]) // packed

    def load(self, param_name: str, tensor: torch.Tensor, shard: int = 0) -> None:
        """Copy one checkpoint tensor (for logical matrix ``shard``) into place."""
        p = getattr(self, param_name)
        if param_name in ("qweight", "qzeros"):        # [K, N/8]: output dim is 1, packed by 8
            a, b = self.shard_range(shard, 8)
            p.data[:, a:b].copy_(tensor)
        elif param_name == "scales":                   # [K/g, N]
            a, b = self.shard_range(shard)
            p.data[:, a:b].copy_(tensor)
        elif param_name == "weight_scale":
            a, b = self.shard_range(shard)
            p.data[a:b].copy_(tensor.reshape(-1))
        else:                                          # weight [N, K], bias [N]
            a, b = self.shard_range(shard)
            p.data[a:b].copy_(tensor)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.method is None:
            return self.ops.linear(x, self.weight, self.bias)
        if self.method == "awq":
            return self.ops.w4a16_linear(x, self.qweight, self.scales, self.qzeros, self.group_size, self.bias)
        return self.ops.w8a8_linear(x, self.weight, self.weight_scale, self.bias)


class RMSNorm(nn.Module):
    def __init__(self, ctx: ModelContext, size: int, eps: float):
        super().__init__()
        self.ops = ctx.ops
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(size, dtype=ctx.dtype), requires_grad=False)

    def forward(self, x, residual=None):
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


class Attention(nn.Module):
    """Stores this step's k/v into the layer's paged cache and attends over it.

    q: [T, Hq*D], k: [T, Hk*D], v: [T, Hk*Dv] -> [T, Hq*Dv].  Rotary is applied by the caller.
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

    def forward(self, q, k, v, meta: AttentionMetadata):
        T = q.shape[0]
        q = q.view(T, self.num_heads, self.head_dim)
        k = k.view(T, self.num_kv_heads, self.head_dim)
        v = v.view(T, self.num_kv_heads, self.v_head_dim)
        self.ops.store_kv(k, v, self.kv, meta.slot_mapping)
        o = self.ops.paged_attention(q, self.kv, meta, scale=self.scale, **self.attn_kw)
        return o.reshape(T, self.num_heads * self.v_head_dim)


class GatedMLP(nn.Module):
    """down(act(gate(x)) * up(x)) with gate and up merged into one GEMM."""

    def __init__(self, ctx: ModelContext, hidden: int, intermediate: int, act: str = "silu", bias: bool = False):
        super().__init__()
        self.ops = ctx.ops
        self.act = act
        self.gate_up_proj = Linear(ctx, hidden, [intermediate, intermediate], bias=bias)
        self.down_proj = Linear(ctx, intermediate, hidden, bias=bias)

    def forward(self, x):
        return self.down_proj(self.ops.act_and_mul(self.gate_up_proj(x), self.act))


class MLP(nn.Module):
    """Non-gated: c_proj(act(c_fc(x))).  GPT-2 / StarCoder2 names (``up_proj`` would be
    taken for half of a gated MLP by CausalLM.stacked)."""

    def __init__(self, ctx: ModelContext, hidden: int, intermediate: int, act: str = "gelu_tanh", bias: bool = True):
        super().__init__()
        self.ops = ctx.ops
        self.act = act
        self.c_fc = Linear(ctx, hidden, intermediate, bias=bias)
        self.c_proj = Linear(ctx, intermediate, hidden, bias=bias)

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
