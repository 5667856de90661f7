"""StarCoder2 (Starcoder2ForCausalLM): LayerNorm (with bias) instead of RMSNorm, a
non-gated MLP (c_fc -> tanh-GELU -> c_proj), biases on every projection when
``use_bias`` (the released models set it), rotary on the full head, GQA, and a
sliding window on every layer when the config sets one.
"""
from __future__ import annotations

from torch import nn

from ..core.config import ModelConfig
from .base import CausalLM, make_embedding, make_lm_head
from .layers import MLP, LayerNorm, ModelContext, Rotary, hf_activation
from .llama import LlamaAttention, rope_spec


class Starcoder2DecoderLayer(nn.Module):
    def __init__(self, ctx: ModelContext, cfg: ModelConfig, i: int, rotary: Rotary):
        super().__init__()
        eps, bias = cfg.get("norm_epsilon", 1e-5), bool(cfg.get("use_bias", True))
        self.input_layernorm = LayerNorm(ctx, cfg.hidden_size, eps)
        self.self_attn = LlamaAttention(ctx, cfg, i, rotary, qkv_bias=bias, o_bias=bias, qk_norm=False)
        self.post_attention_layernorm = LayerNorm(ctx, cfg.hidden_size, eps)
        self.mlp = MLP(ctx, cfg.hidden_size, cfg.intermediate_size, hf_activation(cfg.get("hidden_act", "gelu_pytorch_tanh")), bias=bias)

    def forward(self, positions, x, residual, meta):
        if residual is None:
            residual = x
            x = self.input_layernorm(x)
        else:
            x, residual = self.input_layernorm(x, residual)
        x = self.self_attn(positions, x, meta)
        x, residual = self.post_attention_layernorm(x, residual)
        return self.mlp(x), residual


class Starcoder2Model(nn.Module):
    def __init__(self, ctx: ModelContext, cfg: ModelConfig):
        super().__init__()
        self.embed_tokens = make_embedding(ctx, cfg.vocab_size, cfg.hidden_size)
        rotary = Rotary(ctx, rope_spec(cfg, cfg.head_dim))
        self.layers = nn.ModuleList(Starcoder2DecoderLayer(ctx, cfg, i, rotary) for i in range(cfg.num_hidden_layers))
        self.norm = LayerNorm(ctx, cfg.hidden_size, cfg.get("norm_epsilon", 1e-5))

    def forward(self, input_ids, positions, meta):
        x = self.embed_tokens(input_ids)
        residual = None
        for layer in self.layers:
            x, residual = layer(positions, x, residual, meta)
        x, _ = self.norm(x, residual)
        return x


class Starcoder2ForCausalLM(CausalLM):
    def __init__(self, cfg: ModelConfig, ctx: ModelContext):
        super().__init__(cfg, ctx)
        self.tie_word_embeddings = bool(cfg.get("tie_word_embeddings", True))   # Starcoder2Config's default
        self.model = Starcoder2Model(ctx, cfg)
        self.lm_head = make_lm_head(ctx, cfg.hidden_size, cfg.vocab_size)
