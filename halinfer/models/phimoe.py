"""Phi-3.5-MoE: Mixtral's layout (block_sparse_moe, experts w1/w3/w2) with LayerNorm
(weights and biases) instead of RMSNorm, biases on q/k/v/o and optionally the LM
head, LongRoPE with its own cos/sin multipliers (short_mscale / long_mscale), and
the "sparsemixer" router.

Sparsemixer at inference (the training-time Gumbel sampling and Heun gradient
estimate do nothing at inference): for each of the two picks, the expert with the
highest remaining logit wins, and its weight is its softmax probability among the
logits within a relative distance 2*eps of the winner,
    keep_j = (max - l_j) / max(|l_j|, max) <= 2 * eps      (eps = router_jitter_noise)
the first winner being excluded from the second softmax.  The two weights are not
renormalised.  The rule is written only for top-2, as the model's own code is.
"""
from __future__ import annotations

import torch

from .rope import RopeSpec
from .base import CausalLM
from .decoder import DecoderLayer, DecoderModel
from .layers import Linear, Rotary, hf_activation
from .llama import LlamaAttention
from .moe import W1_W3_W2, ExpertLoading, RouteSpec, SparseMoE, num_experts


def sparsemixer_top2(logits: torch.Tensor, eps: float):
    """(weights float32 [T, 2], ids int32 [T, 2]) from router logits [T, E]."""
    scores = logits.float()
    weights, ids = [], []
    masked = scores
    for _ in range(2):
        best, idx = masked.max(dim=-1, keepdim=True)
        factor = scores.abs().clamp(min=best)
        far = (best - scores) / factor > 2 * eps
        probs = torch.softmax(masked.masked_fill(far, float("-inf")), dim=-1)
        weights.append(probs.gather(-1, idx))
        ids.append(idx)
        masked = masked.scatter(-1, idx, float("-inf"))
    return torch.cat(weights, dim=-1), torch.cat(ids, dim=-1).to(torch.int32)


class SparseMixerMoE(SparseMoE):
    def __init__(self, *args, eps: float, **kw):
        super().__init__(*args, **kw)
        self.eps = eps

    def route(self, logits):
        return sparsemixer_top2(logits, self.eps)


def phimoe_rotary(ctx, cfg) -> Rotary:
    """LongRoPE tables scaled by short_mscale below the original context and long_mscale
    past it (plain rope when the config has no scaling)."""
    theta, rtype, params = cfg.rope_params()
    mscales = rtype != "default" and "short_mscale" in params
    if mscales:
        params = {**params, "attention_factor": 1.0}   # the mscales replace LongRoPE's own factor
    rotary = Rotary(ctx, RopeSpec(rotary_dim=cfg.head_dim, base=theta, rope_type=rtype, params=params,
                                  max_position=cfg.max_position))
    if mscales:
        orig = int(params.get("original_max_position_embeddings") or cfg.get("original_max_position_embeddings"))
        rotary.cos_sin[:orig] *= float(params["short_mscale"])
        rotary.cos_sin[orig:] *= float(params["long_mscale"])
    return rotary


class PhimoeForCausalLM(ExpertLoading, CausalLM):
    def __init__(self, cfg, ctx):
        super().__init__(cfg, ctx)
        if cfg.num_experts_per_tok != 2:
            raise ValueError(f"Phi-3.5-MoE's sparsemixer routes to exactly 2 experts; config asks for "
                             f"{cfg.num_experts_per_tok}")
        rotary = phimoe_rotary(ctx, cfg)
        bias = bool(cfg.get("attention_bias", False))
        route = RouteSpec(top_k=2)
        eps = float(cfg.get("router_jitter_noise", 0.01))
        act = hf_activation(cfg.get("hidden_act"))

        def layer(i):
            attn = LlamaAttention(ctx, cfg, i, rotary, qkv_bias=bias, o_bias=bias, qk_norm=False)
            moe = SparseMixerMoE(ctx, cfg.hidden_size, num_experts(cfg), cfg.intermediate_size, route,
                                 activation=act, expert_names=W1_W3_W2, eps=eps)
            return DecoderLayer(ctx, cfg, attn, moe, norm="layer")

        self.model = DecoderModel(ctx, cfg, layer, norm="layer")
        self.lm_head = Linear(ctx, cfg.hidden_size, cfg.vocab_size, bias=bool(cfg.get("lm_head_bias", False)),
                              quantize=False)

    def convert(self, weights):
        for name, t in weights:
            yield name.replace(".block_sparse_moe.", ".mlp."), t
