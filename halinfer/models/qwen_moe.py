"""Qwen1.5-MoE / Qwen2-MoE and Qwen3-MoE.

Qwen2-MoE: Qwen2 attention (q/k/v bias), softmax top-k routing (renormalised only
with norm_topk_prob), and a shared expert scaled by sigmoid(x @ shared_expert_gate).
Qwen3-MoE: Qwen3 attention (per-head q/k RMSNorm, optional bias), the same routing,
no shared expert.  Both put a dense MLP (intermediate_size) in the layers listed in
mlp_only_layers and in those off the decoder_sparse_step grid.
"""
from __future__ import annotations

from .base import CausalLM, make_lm_head
from .decoder import DecoderLayer, DecoderModel
from .layers import GatedMLP, Rotary, hf_activation
from .llama import LlamaAttention, rope_spec
from .moe import ExpertLoading, RouteSpec, SparseMoE, num_experts


def is_moe_layer(cfg, i: int) -> bool:
    step = cfg.get("decoder_sparse_step", 1) or 1
    return i not in (cfg.get("mlp_only_layers") or []) and num_experts(cfg) > 0 and (i + 1) % step == 0


class Qwen2MoeForCausalLM(ExpertLoading, CausalLM):
    qk_norm = False
    shared_expert = True

    def attention_biases(self, cfg) -> tuple[bool, bool]:
        return bool(cfg.get("qkv_bias", True)), False

    def route_spec(self, cfg) -> RouteSpec:
        return RouteSpec(top_k=cfg.num_experts_per_tok, scoring="softmax",
                         renormalize=bool(cfg.get("norm_topk_prob", False)))

    def __init__(self, cfg, ctx):
        super().__init__(cfg, ctx)
        rotary = Rotary(ctx, rope_spec(cfg, cfg.head_dim))
        route = self.route_spec(cfg)
        act = hf_activation(cfg.get("hidden_act"))
        qkv_bias, o_bias = self.attention_biases(cfg)
        shared = cfg.get("shared_expert_intermediate_size") if self.shared_expert else None

        def layer(i):
            attn = LlamaAttention(ctx, cfg, i, rotary, qkv_bias, o_bias, self.qk_norm)
            if is_moe_layer(cfg, i):
                mlp = SparseMoE(ctx, cfg.hidden_size, num_experts(cfg), cfg.moe_intermediate_size, route,
                                activation=act, shared_intermediate=shared, shared_name="shared_expert",
                                shared_gate=bool(shared))
            else:
                mlp = GatedMLP(ctx, cfg.hidden_size, cfg.intermediate_size, act)
            return DecoderLayer(ctx, cfg, attn, mlp)

        self.model = DecoderModel(ctx, cfg, layer)
        self.lm_head = make_lm_head(ctx, cfg.hidden_size, cfg.vocab_size)


class Qwen3MoeForCausalLM(Qwen2MoeForCausalLM):
    qk_norm = True
    shared_expert = False

    def attention_biases(self, cfg):
        b = bool(cfg.get("attention_bias", False))
        return b, b
