"""Llama 4 (the text model, Llama4ForCausalLM).

Attention: layers with no_rope_layers[i] == 1 rotate q/k (interleaved pairs), then
L2-normalise them per head (use_qk_norm; an RMSNorm with no weight), and attend in
chunks of attention_chunk_size tokens (a query sees keys of its own chunk only).
The other layers ("NoPE") use no position encoding, attend to the whole prefix,
and scale their queries by the temperature 1 + attn_scale * log(1 + floor((p + 1) /
floor_scale)) at position p (attn_temperature_tuning).
Feed-forward: a MoE in the layers listed in moe_layers, a dense MLP of
intermediate_size_mlp elsewhere.  The router takes the top-k logits and turns each
into sigmoid(logit); unlike other MoEs the weight scales the expert's *input*:
out = shared_expert(x) + sum_k expert_k(sigmoid(l_k) * x).
Checkpoint experts: gate_up_proj [E, H, 2I] (gate columns first), down_proj [E, I, H].
"""
from __future__ import annotations

import torch
from torch import nn

from .base import CausalLM, make_lm_head
from .decoder import DecoderLayer, DecoderModel
from .layers import Attention, GatedMLP, Linear, Rotary, hf_activation
from .llama import rope_spec
from .moe import ExpertLoading, RouteSpec, SparseMoE, num_experts


class Llama4Attention(nn.Module):
    def __init__(self, ctx, cfg, i: int, rotary: Rotary):
        super().__init__()
        self.ops = ctx.ops
        H, Hk, D = cfg.num_attention_heads, cfg.num_kv_heads, cfg.head_dim
        self.H, self.Hk, self.D = H, Hk, D
        bias = bool(cfg.get("attention_bias", False))
        self.qkv_proj = Linear(ctx, cfg.hidden_size, [H * D, Hk * D, Hk * D], bias=bias)
        self.o_proj = Linear(ctx, H * D, cfg.hidden_size, bias=bias)
        no_rope = cfg.get("no_rope_layers")
        self.use_rope = bool(no_rope[i]) if no_rope else True
        self.rotary = rotary if self.use_rope else None
        self.eps = cfg.get("rms_norm_eps", 1e-5)
        self.l2_norm = self.use_rope and bool(cfg.get("use_qk_norm", True))
        if self.l2_norm:
            self.register_buffer("unit", torch.ones(D, dtype=ctx.dtype), persistent=False)
        self.temperature = (not self.use_rope) and bool(cfg.get("attn_temperature_tuning", True))
        self.floor_scale, self.attn_scale = float(cfg.get("floor_scale", 8192)), float(cfg.get("attn_scale", 0.1))
        chunk = cfg.get("attention_chunk_size") if self.use_rope else None
        self.attn = Attention(ctx, H, Hk, D, scale=D ** -0.5, chunk_size=chunk)

    def forward(self, positions, x, meta):
        T = x.shape[0]
        q, k, v = self.qkv_proj(x).split([self.H * self.D, self.Hk * self.D, self.Hk * self.D], dim=-1)
        q, k = q.reshape(T, self.H, self.D), k.reshape(T, self.Hk, self.D)
        if self.rotary is not None:
            q, k = self.rotary(positions, q, k)
        if self.l2_norm:
            q = self.ops.rms_norm(q.reshape(-1, self.D), self.unit, self.eps).view(T, self.H, self.D)
            k = self.ops.rms_norm(k.reshape(-1, self.D), self.unit, self.eps).view(T, self.Hk, self.D)
        if self.temperature:
            t = torch.log1p(torch.floor((positions.float() + 1.0) / self.floor_scale)) * self.attn_scale + 1.0
            q = (q * t[:, None, None]).to(q.dtype)
        return self.o_proj(self.attn(q, k, v.contiguous(), meta))


class Llama4MoE(SparseMoE):
    """Router weights scale the experts' inputs (see the module docstring)."""

    def forward(self, x):
        weights, ids = self.route(self.gate(x))
        T, k = ids.shape
        # One row per (token, choice), pre-scaled, each sent to its one expert with weight 1.
        xin = (x[:, None, :] * weights.to(x.dtype)[:, :, None]).reshape(T * k, -1)
        ones = torch.ones(T * k, 1, dtype=torch.float32, device=x.device)
        out = self.experts(xin, ones, ids.reshape(T * k, 1))
        if k > 1:
            out = out.view(T, k, -1).sum(1)
        return self.combine(out, x)


class Llama4ForCausalLM(ExpertLoading, CausalLM):
    def __init__(self, cfg, ctx):
        super().__init__(cfg, ctx)
        rotary = Rotary(ctx, rope_spec(cfg, cfg.head_dim, is_neox=False))
        route = RouteSpec(top_k=cfg.num_experts_per_tok, scoring="sigmoid", renormalize=False)
        act = hf_activation(cfg.get("hidden_act"))
        moe_layers = cfg.get("moe_layers")
        if moe_layers is None:
            step = cfg.get("interleave_moe_layer_step", 1)
            moe_layers = list(range(step - 1, cfg.num_hidden_layers, step))

        def layer(i):
            if i in moe_layers:
                mlp = Llama4MoE(ctx, cfg.hidden_size, num_experts(cfg), cfg.intermediate_size, route, activation=act,
                                shared_intermediate=cfg.intermediate_size, shared_name="shared_expert")
            else:
                mlp = GatedMLP(ctx, cfg.hidden_size, cfg.intermediate_size_mlp, act)
            return DecoderLayer(ctx, cfg, Llama4Attention(ctx, cfg, i, rotary), mlp)

        self.model = DecoderModel(ctx, cfg, layer)
        self.lm_head = make_lm_head(ctx, cfg.hidden_size, cfg.vocab_size)

    def convert(self, weights):
        for name, t in weights:
            name = name.replace(".feed_forward.", ".mlp.").replace(".mlp.router.", ".mlp.gate.")
            if name.endswith(".experts.gate_up_proj"):
                yield name[: -len("gate_up_proj")] + "w13", t.transpose(1, 2)
            elif name.endswith(".experts.down_proj"):
                yield name[: -len("down_proj")] + "w2", t.transpose(1, 2)
            else:
                yield name, t
