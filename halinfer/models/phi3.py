"""Phi-3-mini, Phi-3.5-mini and Phi-4-mini (Phi3ForCausalLM): the Llama computation
with q|k|v fused into ``qkv_proj`` and gate|up fused into ``gate_up_proj`` in the
checkpoint, LongRoPE scaling (its short/long factors), a sliding window on every
layer when the config sets one (Phi-3-mini-4k: 2047), and Phi-4-mini's partial
rotary (rotary on the first 3/4 of each head) with tied embeddings.
"""
from __future__ import annotations

from ..core.config import ModelConfig
from .fused import split_fused, split_names
from .llama import LlamaForCausalLM
from .layers import ModelContext


def _with_original_context(cfg: ModelConfig) -> ModelConfig:
    """Published Phi-3 configs keep original_max_position_embeddings at the top level,
    outside rope_scaling; LongRoPE needs it beside its factors."""
    orig = cfg.get("original_max_position_embeddings")
    rs = cfg.get("rope_scaling")
    if not orig or not isinstance(rs, dict) or "original_max_position_embeddings" in rs:
        return cfg
    return cfg.replace(rope_scaling={**rs, "original_max_position_embeddings": orig})


class Phi3ForCausalLM(LlamaForCausalLM):
    def __init__(self, cfg: ModelConfig, ctx: ModelContext):
        super().__init__(_with_original_context(cfg), ctx)

    def convert(self, weights):
        cfg = self.cfg
        H, Hk, D = cfg.num_attention_heads, cfg.num_kv_heads, cfg.head_dim
        for name, t in weights:
            if ".self_attn.qkv_proj." in name:
                pname, names = split_names(name, "qkv_proj", ["q_proj", "k_proj", "v_proj"])
                yield from zip(names, split_fused(pname, t, [H * D, Hk * D, Hk * D], self.ctx.quant))
            elif ".mlp.gate_up_proj." in name:
                pname, names = split_names(name, "gate_up_proj", ["gate_proj", "up_proj"])
                inter = cfg.intermediate_size
                yield from zip(names, split_fused(pname, t, [inter, inter], self.ctx.quant))
            else:
                yield name, t
