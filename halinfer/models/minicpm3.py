"""MiniCPM3: DeepSeek-V2's latent attention (mla.py) with half rotation (neox) rope,
a dense SwiGLU MLP, and MiniCPM's muP scalings: embeddings times scale_emb, each
block's output times scale_depth / sqrt(num_layers) before it joins the residual,
and the final hidden state divided by hidden_size / dim_model_base before the
(tied) LM head.  v_head_dim defaults to hidden_size / num_heads, as in the
checkpoint's own code and transformers.
"""
from __future__ import annotations

import math

from .rope import RopeSpec
from .base import CausalLM, make_lm_head
from .decoder import DecoderLayer, DecoderModel
from .deepseek import mla_softmax_scale
from .layers import GatedMLP, Rotary, hf_activation
from .mla import MLA_STACKED, MLAttention


class _MiniCPM3Config:
    """The config with MiniCPM3's defaults filled in (v_head_dim)."""

    def __init__(self, cfg):
        self._cfg = cfg
        self.v_head_dim = cfg.get("v_head_dim") or cfg.hidden_size // cfg.num_attention_heads

    def __getattr__(self, key):
        return getattr(self._cfg, key)


class MiniCPM3ForCausalLM(CausalLM):
    stacked = MLA_STACKED

    def __init__(self, cfg, ctx):
        super().__init__(cfg, ctx)
        self.tie_word_embeddings = bool(cfg.get("tie_word_embeddings", True))   # MiniCPM3's default
        mcfg = _MiniCPM3Config(cfg)
        theta, rtype, params = cfg.rope_params()
        rotary = Rotary(ctx, RopeSpec(rotary_dim=cfg.qk_rope_head_dim, base=theta, rope_type=rtype, params=params,
                                      max_position=cfg.max_position, is_neox=True))
        scale = mla_softmax_scale(cfg)
        depth = float(cfg.get("scale_depth", 1.0)) / math.sqrt(cfg.num_hidden_layers)
        act = hf_activation(cfg.get("hidden_act"))

        def layer(i):
            return DecoderLayer(ctx, cfg, MLAttention(ctx, mcfg, rotary, scale),
                                GatedMLP(ctx, cfg.hidden_size, cfg.intermediate_size, act), residual_scale=depth)

        self.model = DecoderModel(ctx, cfg, layer, embed_scale=float(cfg.get("scale_emb", 1.0)))
        self.lm_head = make_lm_head(ctx, cfg.hidden_size, cfg.vocab_size)
        self.logit_scale = float(cfg.get("dim_model_base") or cfg.hidden_size) / cfg.hidden_size
