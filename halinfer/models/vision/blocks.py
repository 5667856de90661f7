"""Pieces every vision tower here shares: plain linears, norms, a pre-norm ViT block."""
from __future__ import annotations

import torch
from torch import nn

from ..layers import LayerNorm, Linear, ModelContext, RMSNorm


def linear(ctx: ModelContext, k: int, n: int, bias: bool = True) -> Linear:
    return Linear(ctx, k, n, bias=bias, quantize=False)   # vision towers stay unquantized


def norm(ctx: ModelContext, size: int, eps: float, kind: str = "layer"):
    return LayerNorm(ctx, size, eps) if kind == "layer" else RMSNorm(ctx, size, eps)


class VisionMLP(nn.Module):
    """fc2(act(fc1(x))) (CLIP, Qwen2-VL), or down(act(gate(x)) * up(x)) when gated (Qwen2.5-VL)."""

    def __init__(self, ctx: ModelContext, dim: int, hidden: int, act: str, gated: bool = False,
                 names: tuple[str, str] = ("fc1", "fc2")):
        super().__init__()
        self.ops, self.act, self.gated, self.names = ctx.ops, act, gated, names
        if gated:
            self.gate_proj = linear(ctx, dim, hidden)
            self.up_proj = linear(ctx, dim, hidden)
            self.down_proj = linear(ctx, hidden, dim)
        else:
            setattr(self, names[0], linear(ctx, dim, hidden))
            setattr(self, names[1], linear(ctx, hidden, dim))

    def forward(self, x):
        if self.gated:
            h = torch.cat((self.gate_proj(x), self.up_proj(x)), dim=-1)
            return self.down_proj(self.ops.act_and_mul(h, self.act))
        first, second = (getattr(self, n) for n in self.names)
        return second(self.ops.act(first(x), self.act))


class SelfAttention(nn.Module):
    """Bidirectional attention with separate q/k/v projections (CLIP, SigLIP, InternViT);
    ``out_name`` is the checkpoint's name of the output projection; ``qk_norm``: RMS norms
    over the whole q and k widths (InternViT-6B)."""

    def __init__(self, ctx: ModelContext, dim: int, heads: int, out_name: str = "out_proj", bias: bool = True,
                 qk_norm: bool = False):
        super().__init__()
        self.ops, self.H, self.D, self.out_name = ctx.ops, heads, dim // heads, out_name
        self.q_proj, self.k_proj, self.v_proj = (linear(ctx, dim, dim, bias) for _ in range(3))
        setattr(self, out_name, linear(ctx, dim, dim))
        self.q_norm = RMSNorm(ctx, dim, 1e-6) if qk_norm else None
        self.k_norm = RMSNorm(ctx, dim, 1e-6) if qk_norm else None

    def forward(self, x, cu_seqlens):
        N = x.shape[0]
        q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k, v = (t.reshape(N, self.H, self.D) for t in (q, k, v))
        o = self.ops.vision_attention(q, k, v, cu_seqlens, self.D ** -0.5)
        return getattr(self, self.out_name)(o.reshape(N, -1))


def load_by_name(module: nn.Module, weights, prefix: str = "") -> set[str]:
    """Copy (name, tensor) pairs into the parameters of the same names (vision parts keep
    the checkpoint's module names, so no mapping is needed).  Returns the names loaded."""
    params = dict(module.named_parameters())
    loaded = set()
    for name, t in weights:
        p = params.get(name)
        if p is None:
            raise KeyError(f"checkpoint tensor {prefix}{name!r} matches no parameter of {type(module).__name__}")
        if p.shape != t.shape:
            raise ValueError(f"checkpoint tensor {prefix}{name!r} has shape {tuple(t.shape)}, "
                             f"the model expects {tuple(p.shape)}")
        p.data.copy_(t)
        loaded.add(name)
    return loaded
