"""The Llama family and its close relatives.

One implementation covers: Llama 1/2/3/3.1/3.2 (rope scaling default, linear,
dynamic, llama3; tied or untied embeddings), Code Llama and Yi (Llama
architecture), Mistral (sliding window), Qwen1.5/Qwen2/Qwen2.5 (q/k/v bias, optional
sliding window on upper layers), Qwen3 (per-head q/k RMSNorm) and InternLM3
(optional q/k/v and o biases).  The differences are read from config.json.
Subclasses elsewhere switch three more knobs: interleaved (GPT-J style) rotary
pairs (GLM), ALiBi instead of rotary (Baichuan 13B) and extra norms after the
attention and the MLP outputs (GLM-4-0414).
"""
from __future__ import annotations

import torch
from torch import nn

from ..core.config import ModelConfig
from .rope import RopeSpec
from .base import CausalLM, make_lm_head
from .alibi import alibi_slopes as make_alibi_slopes
from .decoder import DecoderLayer, DecoderModel
from .layers import Attention, GatedMLP, ModelContext, RMSNorm, Rotary, hf_activation
from .parallel import QKVParallelLinear, RowParallelLinear


def layer_sliding_window(cfg: ModelConfig, i: int) -> int | None:
    """The sliding window of layer i, or None for full attention."""
    sw = cfg.get("sliding_window")
    if not sw:
        return None
    types = cfg.get("layer_types")
    if types:
        return sw if types[i] == "sliding_attention" else None
    if "use_sliding_window" in cfg:  # Qwen2 family: off unless asked, and only above max_window_layers
        if not cfg.get("use_sliding_window", False):
            return None
        return sw if i >= cfg.get("max_window_layers", 0) else None
    return sw  # Mistral: every layer


def rope_spec(cfg: ModelConfig, head_dim: int, is_neox: bool = True) -> RopeSpec:
    theta, rtype, params = cfg.rope_params()
    partial = params.get("partial_rotary_factor") or cfg.get("partial_rotary_factor") or 1.0
    return RopeSpec(rotary_dim=int(head_dim * partial), base=theta, rope_type=rtype, params=params,
                    max_position=cfg.max_position, is_neox=is_neox)


class LlamaAttention(nn.Module):
    """rotary None: no rotation (positions come from alibi_slopes, or from nowhere)."""

    def __init__(self, ctx: ModelContext, cfg: ModelConfig, i: int, rotary: Rotary | None, qkv_bias: bool,
                 o_bias: bool, qk_norm: bool, *, alibi_slopes: torch.Tensor | None = None):
        super().__init__()
        D, hidden = cfg.head_dim, cfg.hidden_size
        self.qkv_proj = QKVParallelLinear(ctx, hidden, D, cfg.num_attention_heads, cfg.num_kv_heads, bias=qkv_bias)
        heads = self.qkv_proj.heads      # this rank's share (all of them with one rank)
        H, Hk = heads.heads, heads.kv_heads
        self.H, self.Hk, self.D = H, Hk, D
        self.o_proj = RowParallelLinear(ctx, cfg.num_attention_heads * D, hidden, bias=o_bias,
                                        what="num_attention_heads * head_dim")
        if alibi_slopes is not None:
            alibi_slopes = alibi_slopes[heads.q_start:heads.q_start + H]
        self.rotary = rotary
        eps = cfg.get("rms_norm_eps", 1e-6)
        self.q_norm = RMSNorm(ctx, D, eps) if qk_norm else None
        self.k_norm = RMSNorm(ctx, D, eps) if qk_norm else None
        self.attn = Attention(ctx, H, Hk, D, scale=D ** -0.5, sliding_window=layer_sliding_window(cfg, i),
                              alibi_slopes=alibi_slopes)

    def input_linears(self):
        """forward reads x only through qkv_proj (and its row count): models/norm_quant_plan.py."""
        return [self.qkv_proj]

    def forward(self, positions, x, meta):
        T = x.shape[0]     # x may be QuantizedActs (a fused norm's), which has a shape too
        q, k, v = self.qkv_proj(x).split([self.H * self.D, self.Hk * self.D, self.Hk * self.D], dim=-1)
        q, k = q.reshape(T, self.H, self.D), k.reshape(T, self.Hk, self.D)
        if self.q_norm is not None:
            q = self.q_norm(q.reshape(-1, self.D)).view(T, self.H, self.D)
            k = self.k_norm(k.reshape(-1, self.D)).view(T, self.Hk, self.D)
        if self.rotary is not None and self.rotary.plain(positions):
            # rotated in the store's op: one launch a layer fewer where the backend fuses them
            return self.o_proj(self.attn(q, k, v, meta, rope=(self.rotary, positions)))
        if self.rotary is not None:
            q, k = self.rotary(positions, q, k)
        return self.o_proj(self.attn(q, k, v, meta))  # v stays a strided view: store_kv takes strides


def llama_layer(ctx, cfg: ModelConfig, i: int, rotary: Rotary | None, qkv_bias: bool, o_bias: bool,
                qk_norm: bool, *, alibi_slopes: torch.Tensor | None = None, sandwich_norms: bool = False):
    attn = LlamaAttention(ctx, cfg, i, rotary, qkv_bias, o_bias, qk_norm, alibi_slopes=alibi_slopes)
    mlp = GatedMLP(ctx, cfg.hidden_size, cfg.intermediate_size, hf_activation(cfg.get("hidden_act")),
                   bias=bool(cfg.get("mlp_bias", False)))
    return DecoderLayer(ctx, cfg, attn, mlp, sandwich_norms=sandwich_norms)


class LlamaModel(DecoderModel):
    def __init__(self, ctx, cfg: ModelConfig, qkv_bias: bool, o_bias: bool, qk_norm: bool, *,
                 is_neox: bool = True, alibi: bool = False, sandwich_norms: bool = False):
        rotary = None if alibi else Rotary(ctx, rope_spec(cfg, cfg.head_dim, is_neox))
        slopes = make_alibi_slopes(cfg.num_attention_heads).to(ctx.device) if alibi else None
        super().__init__(ctx, cfg, lambda i: llama_layer(ctx, cfg, i, rotary, qkv_bias, o_bias, qk_norm,
                                                               alibi_slopes=slopes, sandwich_norms=sandwich_norms))


class LlamaForCausalLM(CausalLM):
    qkv_bias_key, o_bias_key, qk_norm = "attention_bias", "attention_bias", False
    rope_is_neox = True        # False: rotate interleaved pairs (GLM)
    sandwich_norms = False     # GLM-4-0414

    def __init__(self, cfg: ModelConfig, ctx: ModelContext):
        super().__init__(cfg, ctx)
        qkv_bias, o_bias = self.biases(cfg)
        self.model = LlamaModel(ctx, cfg, qkv_bias, o_bias, self.qk_norm, is_neox=self.rope_is_neox,
                                alibi=self.uses_alibi(cfg), sandwich_norms=self.sandwich_norms)
        self.lm_head = make_lm_head(ctx, cfg.hidden_size, cfg.vocab_size)

    def biases(self, cfg: ModelConfig) -> tuple[bool, bool]:
        return bool(cfg.get(self.qkv_bias_key, False)), bool(cfg.get(self.o_bias_key, False))

    def uses_alibi(self, cfg: ModelConfig) -> bool:
        """True: no rotary; ALiBi biases in attention instead (Baichuan 13B)."""
        return False


class Qwen2ForCausalLM(LlamaForCausalLM):
    def biases(self, cfg):
        return True, False  # Qwen1.5/2/2.5 always carry q/k/v biases, never an o bias


class Qwen3ForCausalLM(LlamaForCausalLM):
    qk_norm = True


class InternLM3ForCausalLM(LlamaForCausalLM):
    qkv_bias_key, o_bias_key = "qkv_bias", "bias"
