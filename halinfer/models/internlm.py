"""InternLM (v1, InternLMForCausalLM; remote code modeling_internlm.py): Llama with
MHA, Llama's module names, q/k/v/o biases switched by ``bias``, and the rotary base
in ``rotary: {"base": ..., "type": "origin" | "dynamic"}``.  The "dynamic" type only
rescales past max_position_embeddings, which is the context halinfer serves it with.
"""
from __future__ import annotations

from ..core.config import ModelConfig
from .layers import ModelContext
from .llama import LlamaForCausalLM


class InternLMForCausalLM(LlamaForCausalLM):
    qkv_bias_key, o_bias_key = "bias", "bias"

    def __init__(self, cfg: ModelConfig, ctx: ModelContext):
        rotary = cfg.get("rotary") or {}
        if rotary.get("type", "origin") not in ("origin", "dynamic"):
            raise NotImplementedError(f"InternLM rotary type {rotary.get('type')!r} is not supported")
        if "base" in rotary:
            cfg = cfg.replace(rope_theta=float(rotary["base"]), rope_scaling=None)
        super().__init__(cfg, ctx)
