"""Qwen (v1, QWenLMHeadModel; remote code modeling_qwen.py): the Llama computation
with MHA, q/k/v biases (none on the output projection) and an untied head, in its
own layout (the facts this file relies on):

    transformer.wte                      token embeddings
    transformer.h.N.ln_1 / ln_2          RMSNorm before attention / MLP, eps layer_norm_epsilon
    transformer.h.N.attn.c_attn          rows [q | k | v] (hidden_size each), with bias
    transformer.h.N.attn.c_proj          output projection, no bias
    transformer.h.N.mlp.w1, w2, c_proj   c_proj(w1(x) * silu(w2(x))), w1/w2 of intermediate_size / 2:
                                         w2 is the gate, w1 the up projection
    transformer.ln_f, lm_head            final RMSNorm, LM head
    rotary: neox-style halves, base rotary_emb_base, on rotary_pct of kv_channels.

Not reproduced: past seq_length Qwen's remote code switches on dynamic-NTK rotary
(chosen per call from the sequence length) and logn query scaling; halinfer keeps
plain rotary there and warns when the context goes past seq_length.
"""
from __future__ import annotations

import logging
import re

from ..core.config import ModelConfig
from .fused import split_fused, split_names
from .layers import ModelContext
from .llama import LlamaForCausalLM

log = logging.getLogger(__name__)

_RENAMES = [
    (r"^transformer\.wte\.", "model.embed_tokens."),
    (r"^transformer\.ln_f\.", "model.norm."),
    (r"^transformer\.h\.", "model.layers."),
    (r"\.ln_1\.", ".input_layernorm."),
    (r"\.ln_2\.", ".post_attention_layernorm."),
    (r"\.attn\.c_proj\.", ".self_attn.o_proj."),
    (r"\.mlp\.w1\.", ".mlp.up_proj."),
    (r"\.mlp\.w2\.", ".mlp.gate_proj."),
    (r"\.mlp\.c_proj\.", ".mlp.down_proj."),
]


def qwen_as_llama(cfg: ModelConfig) -> ModelConfig:
    heads = cfg.num_attention_heads
    if cfg.get("kv_channels", cfg.hidden_size // heads) * heads != cfg.hidden_size:
        raise NotImplementedError("Qwen (v1) with kv_channels * heads != hidden_size is not supported")
    return cfg.replace(
        num_key_value_heads=heads, head_dim=cfg.hidden_size // heads, intermediate_size=cfg.intermediate_size // 2,
        rms_norm_eps=cfg.get("layer_norm_epsilon", 1e-6), hidden_act="silu", rope_scaling=None,
        rope_parameters={"rope_type": "default", "rope_theta": float(cfg.get("rotary_emb_base", 10000)),
                         "partial_rotary_factor": float(cfg.get("rotary_pct", 1.0))},
        tie_word_embeddings=False,
    )


class QWenLMHeadModel(LlamaForCausalLM):
    def __init__(self, cfg: ModelConfig, ctx: ModelContext):
        super().__init__(qwen_as_llama(cfg), ctx)
        seq = cfg.get("seq_length")
        if seq and ctx.max_model_len > seq and (cfg.get("use_dynamic_ntk") or cfg.get("use_logn_attn")):
            log.warning("Qwen (v1): positions past seq_length=%d use plain rotary, without the remote code's "
                        "dynamic NTK / logn scaling; pass max_model_len=%d to stay within it", seq, seq)

    def biases(self, cfg):
        return True, False

    def convert(self, weights):
        H, D = self.cfg.num_attention_heads, self.cfg.head_dim
        for name, t in weights:
            for pat, rep in _RENAMES:
                name = re.sub(pat, rep, name)
            if ".attn.c_attn." in name:
                name = name.replace(".attn.c_attn.", ".self_attn.c_attn.")
                pname, names = split_names(name, "c_attn", ["q_proj", "k_proj", "v_proj"])
                yield from zip(names, split_fused(pname, t, [H * D] * 3, self.ctx.quant))
            else:
                yield name, t
