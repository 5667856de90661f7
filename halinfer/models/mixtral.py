"""Mixtral: Llama/Mistral attention (optional sliding window) with a softmax top-k
mixture of experts, renormalised over the chosen experts, in every layer.

Checkpoints name the block ``block_sparse_moe`` and the expert matrices w1 (gate),
w3 (up), w2 (down).
"""
from __future__ import annotations

from .base import CausalLM, make_lm_head
from .decoder import DecoderLayer, DecoderModel
from .layers import Rotary, hf_activation
from .llama import LlamaAttention, rope_spec
from .moe import W1_W3_W2, ExpertLoading, RouteSpec, SparseMoE, num_experts


class MixtralForCausalLM(ExpertLoading, CausalLM):
    def __init__(self, cfg, ctx):
        super().__init__(cfg, ctx)
        rotary = Rotary(ctx, rope_spec(cfg, cfg.head_dim))
        route = RouteSpec(top_k=cfg.num_experts_per_tok, scoring="softmax", renormalize=True)
        act = hf_activation(cfg.get("hidden_act"))

        def layer(i):
            attn = LlamaAttention(ctx, cfg, i, rotary, qkv_bias=False, o_bias=False, qk_norm=False)
            moe = SparseMoE(ctx, cfg.hidden_size, num_experts(cfg), cfg.intermediate_size, route, activation=act,
                            expert_names=W1_W3_W2)
            return DecoderLayer(ctx, cfg, attn, moe)

        self.model = DecoderModel(ctx, cfg, layer)
        self.lm_head = make_lm_head(ctx, cfg.hidden_size, cfg.vocab_size)

    def convert(self, weights):
        for name, t in weights:
            yield name.replace(".block_sparse_moe.", ".mlp."), t
