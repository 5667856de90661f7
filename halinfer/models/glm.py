"""GLM-4 and its relatives: the Llama computation with rotary on the first half of
each head in interleaved pairs (x[2i], x[2i+1]), q/k/v biases, no o bias, and
gate|up fused in the checkpoint.

* GlmForCausalLM (transformers; GLM-4-9B "-hf" checkpoints).
* Glm4ForCausalLM (GLM-4-0414): adds a norm after the attention output and one after
  the MLP output, before each joins the residual stream.
* ChatGLMModel / ChatGLMForConditionalGeneration (remote code: ChatGLM2, ChatGLM3,
  GLM-4-9B, CodeGeeX4).  Same computation, original layout, as modeling_chatglm.py
  defines it (the facts this file relies on):
    transformer.embedding.word_embeddings          token embeddings (padded_vocab_size rows)
    transformer.encoder.layers.N.input_layernorm   RMSNorm (rmsnorm: true), eps layernorm_epsilon
    ....self_attention.query_key_value             rows [q: H*D | k: G*D | v: G*D], G = multi_query_group_num,
                                                   D = kv_channels; bias when add_qkv_bias or add_bias_linear
    ....self_attention.dense                       output projection (bias only with add_bias_linear)
    ....post_attention_layernorm                   RMSNorm before the MLP
    ....mlp.dense_h_to_4h                          rows [gate | up], each ffn_hidden_size; silu(gate) * up
    ....mlp.dense_4h_to_h                          down projection
    transformer.encoder.final_layernorm            final RMSNorm (post_layer_norm: true)
    transformer.output_layer                       LM head (never tied)
    transformer.rotary_pos_emb.inv_freq            a saved buffer, unused here
  Rotary: RotaryEmbedding(kv_channels // 2) with base 10000 * rope_ratio (rope_ratio
  absent = 1), applied to the first kv_channels / 2 channels as interleaved pairs;
  attention scale 1/sqrt(kv_channels) (query_key_layer_scaling multiplies and divides
  by the layer number, which cancels); context length seq_length.
"""
from __future__ import annotations

import re

from ..core.config import ModelConfig
from .fused import split_fused, split_names
from .layers import ModelContext
from .llama import LlamaForCausalLM


def _default_half_rotary(cfg: ModelConfig) -> ModelConfig:
    """transformers' GlmConfig defaults partial_rotary_factor to 0.5 when a config omits it."""
    rp = cfg.get("rope_parameters") or {}
    if "partial_rotary_factor" in rp or cfg.get("partial_rotary_factor"):
        return cfg
    return cfg.replace(partial_rotary_factor=0.5)


class GlmForCausalLM(LlamaForCausalLM):
    rope_is_neox = False

    def __init__(self, cfg: ModelConfig, ctx: ModelContext):
        super().__init__(_default_half_rotary(cfg), ctx)

    def biases(self, cfg):
        return bool(cfg.get("attention_bias", True)), False

    def convert(self, weights):
        inter = self.cfg.intermediate_size
        for name, t in weights:
            if ".mlp.gate_up_proj." in name:
                pname, names = split_names(name, "gate_up_proj", ["gate_proj", "up_proj"])
                yield from zip(names, split_fused(pname, t, [inter, inter], self.ctx.quant))
            else:
                yield name, t


class Glm4ForCausalLM(GlmForCausalLM):
    sandwich_norms = True


def chatglm_as_glm(cfg: ModelConfig) -> ModelConfig:
    """A ChatGLM config under the names the Llama layers read."""
    unsupported = {
        "rmsnorm": (False, "LayerNorm variants"),
        "apply_residual_connection_post_layernorm": (True, "post-norm residuals"),
        "post_layer_norm": (False, "no final norm"),
    }
    for key, (bad, what) in unsupported.items():
        if cfg.get(key, not bad) == bad:
            raise NotImplementedError(f"ChatGLM with {key}={bad} ({what}) is not supported")
    if cfg.get("pre_seq_len"):
        raise NotImplementedError("ChatGLM with a P-tuning prefix (pre_seq_len) is not supported")
    if cfg.get("quantization_bit"):
        raise NotImplementedError("ChatGLM's own int4/int8 weights (quantization_bit) are not supported")
    heads = cfg.num_attention_heads
    head_dim = cfg.get("kv_channels") or cfg.hidden_size // heads
    groups = cfg.get("multi_query_group_num") if cfg.get("multi_query_attention") else heads
    linear_bias = bool(cfg.get("add_bias_linear", False))
    return cfg.replace(
        num_hidden_layers=cfg.num_layers, num_key_value_heads=groups, head_dim=head_dim,
        intermediate_size=cfg.ffn_hidden_size, rms_norm_eps=cfg.get("layernorm_epsilon", 1e-5),
        vocab_size=cfg.vocab_size, max_position_embeddings=cfg.max_position, hidden_act="silu",
        rope_scaling=None, rope_parameters={"rope_type": "default", "partial_rotary_factor": 0.5,
                                            "rope_theta": 10000.0 * float(cfg.get("rope_ratio", 1))},
        attention_bias=linear_bias or bool(cfg.get("add_qkv_bias", False)), o_bias=linear_bias,
        mlp_bias=linear_bias, tie_word_embeddings=False,
    )


_RENAMES = [
    (r"^transformer\.embedding\.word_embeddings\.", "model.embed_tokens."),
    (r"^transformer\.encoder\.final_layernorm\.", "model.norm."),
    (r"^transformer\.output_layer\.", "lm_head."),
    (r"^transformer\.encoder\.layers\.", "model.layers."),
    (r"\.self_attention\.dense\.", ".self_attn.o_proj."),
    (r"\.mlp\.dense_4h_to_h\.", ".mlp.down_proj."),
]


class ChatGLMForCausalLM(GlmForCausalLM):
    ignore_suffixes = GlmForCausalLM.ignore_suffixes + ("rotary_pos_emb.inv_freq",)

    def __init__(self, cfg: ModelConfig, ctx: ModelContext):
        super().__init__(chatglm_as_glm(cfg), ctx)

    def biases(self, cfg):
        return bool(cfg.attention_bias), bool(cfg.o_bias)

    def convert(self, weights):
        cfg = self.cfg
        H, G, D, inter = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim, cfg.intermediate_size
        for name, t in weights:
            for pat, rep in _RENAMES:
                name = re.sub(pat, rep, name)
            if ".self_attention.query_key_value." in name:
                name = name.replace(".self_attention.", ".self_attn.")
                pname, names = split_names(name, "query_key_value", ["q_proj", "k_proj", "v_proj"])
                yield from zip(names, split_fused(pname, t, [H * D, G * D, G * D], self.ctx.quant))
            elif ".mlp.dense_h_to_4h." in name:
                pname, names = split_names(name, "dense_h_to_4h", ["gate_proj", "up_proj"])
                yield from zip(names, split_fused(pname, t, [inter, inter], self.ctx.quant))
            else:
                yield name, t
