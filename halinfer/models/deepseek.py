"""DeepSeek-MoE (V1) and DeepSeek-V2 / V2.5.

Both: softmax routing over n_routed_experts, top-k weights renormalised only with
norm_topk_prob (otherwise multiplied by routed_scaling_factor, as DeepSeek's own
modeling code does), n_shared_experts always-on experts fused into one MLP of
n_shared * moe_intermediate_size, and a dense MLP in the first first_k_dense_replace
layers and off the moe_layer_freq grid.
V1 (DeepseekForCausalLM, hub code only) has Llama attention.  V2 has multi-head latent
attention (mla.py) with interleaved rope on the rope part, YaRN scaling whose mscale
also multiplies the softmax scale, and "group_limited_greedy" routing: experts only
from the topk_group groups with the highest max score.
"""
from __future__ import annotations

import math

from .rope import RopeSpec
from .base import CausalLM, make_lm_head
from .decoder import DecoderLayer, DecoderModel
from .layers import GatedMLP, Rotary, hf_activation
from .llama import LlamaAttention, rope_spec
from .mla import MLA_STACKED, MLAttention
from .moe import ExpertLoading, RouteSpec, SparseMoE, num_experts


def yarn_mscale(scale: float, m: float) -> float:
    return 1.0 if scale <= 1 else 0.1 * m * math.log(scale) + 1.0


def mla_softmax_scale(cfg) -> float:
    """qk_head_dim^-0.5, times mscale(factor, mscale_all_dim)^2 under YaRN."""
    scale = (cfg.qk_nope_head_dim + cfg.qk_rope_head_dim) ** -0.5
    _, rtype, p = cfg.rope_params()
    if rtype != "default" and p.get("mscale_all_dim"):
        scale *= yarn_mscale(p["factor"], p["mscale_all_dim"]) ** 2
    return scale


def deepseek_route(cfg) -> RouteSpec:
    method = cfg.get("topk_method", "greedy")
    if method not in ("greedy", "group_limited_greedy"):
        raise ValueError(f"DeepSeek topk_method {method!r} is not supported; supported: greedy, group_limited_greedy")
    norm = bool(cfg.get("norm_topk_prob", False)) and cfg.num_experts_per_tok > 1
    grouped = method == "group_limited_greedy"
    return RouteSpec(top_k=cfg.num_experts_per_tok, scoring=cfg.get("scoring_func", "softmax"), renormalize=norm,
                     num_groups=cfg.get("n_group") if grouped else None,
                     topk_groups=cfg.get("topk_group") if grouped else None,
                     routed_scaling=1.0 if norm else float(cfg.get("routed_scaling_factor", 1.0)), fp32_router=True)


def is_moe_layer(cfg, i: int) -> bool:
    return (cfg.get("n_routed_experts") is not None and i >= cfg.get("first_k_dense_replace", 0)
            and i % (cfg.get("moe_layer_freq", 1) or 1) == 0)


class DeepseekForCausalLM(ExpertLoading, CausalLM):
    """DeepSeek-MoE (V1): Llama attention, DeepSeek MoE feed-forward."""

    def make_rotary(self, ctx, cfg):
        return Rotary(ctx, rope_spec(cfg, cfg.head_dim))

    def make_attention(self, ctx, cfg, i, rotary):
        b = bool(cfg.get("attention_bias", False))
        return LlamaAttention(ctx, cfg, i, rotary, qkv_bias=b, o_bias=b, qk_norm=False)

    def __init__(self, cfg, ctx):
        super().__init__(cfg, ctx)
        route = deepseek_route(cfg)
        act = hf_activation(cfg.get("hidden_act"))
        shared = cfg.get("n_shared_experts") or 0
        rotary = self.make_rotary(ctx, cfg)

        def layer(i):
            attn = self.make_attention(ctx, cfg, i, rotary)
            if is_moe_layer(cfg, i):
                mlp = SparseMoE(ctx, cfg.hidden_size, num_experts(cfg), cfg.moe_intermediate_size, route,
                                activation=act, shared_intermediate=cfg.moe_intermediate_size * shared or None)
            else:
                mlp = GatedMLP(ctx, cfg.hidden_size, cfg.intermediate_size, act)
            return DecoderLayer(ctx, cfg, attn, mlp)

        self.model = DecoderModel(ctx, cfg, layer)
        self.lm_head = make_lm_head(ctx, cfg.hidden_size, cfg.vocab_size)


class DeepseekV2ForCausalLM(DeepseekForCausalLM):
    """DeepSeek-V2 / V2-Lite / V2.5: MLA attention, DeepSeek MoE feed-forward."""

    stacked = MLA_STACKED

    def make_rotary(self, ctx, cfg):
        theta, rtype, params = cfg.rope_params()
        return Rotary(ctx, RopeSpec(rotary_dim=cfg.qk_rope_head_dim, base=theta, rope_type=rtype, params=params,
                                    max_position=cfg.max_position, is_neox=False))

    def make_attention(self, ctx, cfg, i, rotary):
        return MLAttention(ctx, cfg, rotary, mla_softmax_scale(cfg))
