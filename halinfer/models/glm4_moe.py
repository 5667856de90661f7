"""GLM-4.5 / GLM-4.5-Air: Llama-style attention with q/k/v biases (attention_bias),
optional per-head q/k RMSNorm (use_qk_norm) and partial rotary (half rotation over
partial_rotary_factor of each head); dense MLPs in the first first_k_dense_replace
layers, then a DeepSeek-V3-style MoE: sigmoid scores, an e_score_correction_bias
that steers only the choice, grouped top-k (group score = sum of its two best),
renormalised weights times routed_scaling_factor, and shared experts.

The checkpoints carry num_nextn_predict_layers extra layers past num_hidden_layers
(multi-token prediction heads); generation does not use them, so they are skipped.
"""
from __future__ import annotations

import re

from .base import CausalLM, make_lm_head
from .decoder import DecoderLayer, DecoderModel
from .layers import GatedMLP, Rotary, hf_activation
from .llama import LlamaAttention, rope_spec
from .moe import ExpertLoading, RouteSpec, SparseMoE, num_experts

_LAYER = re.compile(r"^model\.layers\.(\d+)\.")


class Glm4MoeForCausalLM(ExpertLoading, CausalLM):
    def __init__(self, cfg, ctx):
        super().__init__(cfg, ctx)
        rotary = Rotary(ctx, rope_spec(cfg, cfg.head_dim))
        route = RouteSpec(top_k=cfg.num_experts_per_tok, scoring="sigmoid",
                          renormalize=bool(cfg.get("norm_topk_prob", True)), num_groups=cfg.get("n_group"),
                          topk_groups=cfg.get("topk_group"),
                          routed_scaling=float(cfg.get("routed_scaling_factor", 1.0)), correction_bias=True,
                          fp32_router=True)
        act = hf_activation(cfg.get("hidden_act"))
        shared = (cfg.get("n_shared_experts") or 0) * cfg.moe_intermediate_size or None
        dense_layers = cfg.get("first_k_dense_replace", 0)

        def layer(i):
            attn = LlamaAttention(ctx, cfg, i, rotary, qkv_bias=bool(cfg.get("attention_bias", False)), o_bias=False,
                                  qk_norm=bool(cfg.get("use_qk_norm", False)))
            if i < dense_layers:
                mlp = GatedMLP(ctx, cfg.hidden_size, cfg.intermediate_size, act)
            else:
                mlp = SparseMoE(ctx, cfg.hidden_size, num_experts(cfg), cfg.moe_intermediate_size, route,
                                activation=act, shared_intermediate=shared)
            return DecoderLayer(ctx, cfg, attn, mlp)

        self.model = DecoderModel(ctx, cfg, layer)
        self.lm_head = make_lm_head(ctx, cfg.hidden_size, cfg.vocab_size)

    def convert(self, weights):
        n = self.cfg.num_hidden_layers
        for name, t in weights:
            m = _LAYER.match(name)
            if m and int(m[1]) >= n:
                continue   # a multi-token-prediction layer
            yield name, t
