"""StarCoder2 (Starcoder2ForCausalLM): LayerNorm (with bias) instead of RMSNorm, a
non-gated MLP (c_fc -> tanh-GELU -> c_proj), biases on every projection when
``use_bias`` (the released models set it), rotary on the full head, GQA, and a
sliding window on every layer when the config sets one.
"""
from __future__ import annotations

from ..core.config import ModelConfig
from .base import CausalLM, make_lm_head
from .decoder import DecoderLayer, DecoderModel
from .layers import MLP, ModelContext, Rotary, hf_activation
from .llama import LlamaAttention, rope_spec


class Starcoder2Model(DecoderModel):
    def __init__(self, ctx: ModelContext, cfg: ModelConfig):
        rotary = Rotary(ctx, rope_spec(cfg, cfg.head_dim))
        bias = bool(cfg.get("use_bias", True))
        act = hf_activation(cfg.get("hidden_act", "gelu_pytorch_tanh"))
        super().__init__(ctx, cfg, lambda i: DecoderLayer(
            ctx, cfg, LlamaAttention(ctx, cfg, i, rotary, qkv_bias=bias, o_bias=bias, qk_norm=False),
            MLP(ctx, cfg.hidden_size, cfg.intermediate_size, act, bias=bias), norm="layer"), norm="layer")


class Starcoder2ForCausalLM(CausalLM):
    def __init__(self, cfg: ModelConfig, ctx: ModelContext):
        super().__init__(cfg, ctx)
        self.tie_word_embeddings = bool(cfg.get("tie_word_embeddings", True))   # Starcoder2Config's default
        self.model = Starcoder2Model(ctx, cfg)
        self.lm_head = make_lm_head(ctx, cfg.hidden_size, cfg.vocab_size)
