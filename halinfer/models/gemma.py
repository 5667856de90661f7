"""Gemma, Gemma 2 and Gemma 3 (text): Llama-like decoders with Gemma's own details.

All three: RMSNorm weights stored as an offset (the norm multiplies by 1 + w; we
add the 1 at load, so the plain rms_norm op applies), embeddings multiplied by
sqrt(hidden_size) (rounded to the model dtype, as HF does), a tanh-GELU gated MLP
(Gemma 1's legacy ``hidden_act: "gelu"`` means the tanh form too) and tied
embeddings unless the config says otherwise.
Gemma 2 adds: attention scale query_pre_attn_scalar**-0.5, attention-score and
final-logit soft-capping, sliding-window attention on alternate layers, and norms
after the attention and MLP outputs ("sandwich" norms).
Gemma 3 adds: per-head q/k RMSNorm, a sliding/full layer pattern, and a separate
rotary table per layer type (local base for sliding layers; global base and
rope scaling for full-attention layers).
"""
from __future__ import annotations

import torch
from torch import nn

from ..core.config import ModelConfig
from .rope import RopeSpec
from .base import CausalLM, make_lm_head
from .decoder import DecoderLayer, DecoderModel
from .layers import Attention, GatedMLP, Linear, ModelContext, RMSNorm, Rotary
from .llama import LlamaAttention


def gemma_activation(cfg: ModelConfig) -> str:
    name = cfg.get("hidden_activation") or cfg.get("hidden_act") or "gelu_pytorch_tanh"
    # Gemma's released configs say "gelu" but were trained with the tanh approximation;
    # transformers maps it to gelu_pytorch_tanh, and so do we.
    if name in ("gelu", "gelu_pytorch_tanh", "gelu_new", "gelu_tanh"):
        return "gelu_tanh"
    raise ValueError(f"unsupported Gemma activation {name!r}; supported: gelu_pytorch_tanh")


def hf_default(cfg: ModelConfig, key: str, version: int):
    """A field, or transformers' default when the config omits it (an explicit null stays None)."""
    if key in cfg:
        return cfg.get(key)
    return {"query_pre_attn_scalar": 256, "attn_logit_softcapping": 50.0 if version == 2 else None,
            "final_logit_softcapping": 30.0 if version == 2 else None}[key]


def layer_types(cfg: ModelConfig, version: int) -> list[str]:
    """'sliding_attention' / 'full_attention' per layer (Gemma 1: all full)."""
    n = cfg.num_hidden_layers
    if version == 1 or not cfg.get("sliding_window"):
        return ["full_attention"] * n
    if cfg.get("layer_types"):
        return list(cfg.layer_types)
    # Configs as published carry a period instead: Gemma 2 alternates (sliding first),
    # Gemma 3 has sliding_window_pattern - 1 sliding layers before each full one.
    period = 2 if version == 2 else int(cfg.get("sliding_window_pattern", 6))
    return ["sliding_attention" if (i + 1) % period else "full_attention" for i in range(n)]


def _spec(cfg: ModelConfig, head_dim: int, params: dict, default_theta: float) -> RopeSpec:
    params = dict(params)
    rtype = params.get("rope_type") or params.get("type") or "default"
    return RopeSpec(rotary_dim=head_dim, base=float(params.get("rope_theta") or default_theta), rope_type=rtype,
                    params=params, max_position=cfg.max_position)


def rope_specs(cfg: ModelConfig, head_dim: int, version: int) -> dict[str, RopeSpec]:
    """Rotary table per layer type."""
    if version < 3:
        theta, rtype, params = cfg.rope_params()
        spec = RopeSpec(rotary_dim=head_dim, base=theta, rope_type=rtype, params=params, max_position=cfg.max_position)
        return {"full_attention": spec, "sliding_attention": spec}
    rp = cfg.get("rope_parameters") or {}
    if "full_attention" in rp or "sliding_attention" in rp:       # transformers 5: one dict per layer type
        full, local = rp.get("full_attention") or {}, rp.get("sliding_attention") or {}
    else:                                                           # as published: global + local base
        full = {**(cfg.get("rope_scaling") or {}), "rope_theta": cfg.get("rope_theta", 1_000_000.0)}
        local = {"rope_type": "default", "rope_theta": cfg.get("rope_local_base_freq", 10_000.0)}
    return {"full_attention": _spec(cfg, head_dim, full, 1_000_000.0),
            "sliding_attention": _spec(cfg, head_dim, local, 10_000.0)}


class GemmaAttention(LlamaAttention):
    """Llama's attention step (forward inherited) with Gemma's scale, soft-cap and windows."""

    def __init__(self, ctx: ModelContext, cfg: ModelConfig, rotary: Rotary, sliding_window: int | None,
                 version: int):
        nn.Module.__init__(self)  # LlamaAttention's constructor reads Llama's config fields
        H, Hk, D = cfg.num_attention_heads, cfg.num_kv_heads, cfg.head_dim
        self.H, self.Hk, self.D = H, Hk, D
        bias = bool(cfg.get("attention_bias", False))
        self.qkv_proj = Linear(ctx, cfg.hidden_size, [H * D, Hk * D, Hk * D], bias=bias)
        self.o_proj = Linear(ctx, H * D, cfg.hidden_size, bias=bias)
        self.rotary = rotary
        qk_norm = version >= 3
        self.q_norm = RMSNorm(ctx, D, cfg.get("rms_norm_eps", 1e-6)) if qk_norm else None
        self.k_norm = RMSNorm(ctx, D, cfg.get("rms_norm_eps", 1e-6)) if qk_norm else None
        scale = D ** -0.5 if version == 1 else float(hf_default(cfg, "query_pre_attn_scalar", version)) ** -0.5
        soft_cap = hf_default(cfg, "attn_logit_softcapping", version) if version >= 2 else None
        self.attn = Attention(ctx, H, Hk, D, scale=scale, sliding_window=sliding_window, soft_cap=soft_cap)


# Gemma 2/3's sandwich norms under the shared DecoderLayer's names: their
# post_attention_layernorm normalises the attention output, and pre_/post_feedforward
# wrap the MLP (Gemma 1's post_attention_layernorm is the pre-MLP norm, as in Llama).
SANDWICH_NAMES = {"post_attention_layernorm": "post_self_attn_layernorm",
                  "pre_feedforward_layernorm": "post_attention_layernorm",
                  "post_feedforward_layernorm": "post_mlp_layernorm"}


def gemma_model(ctx: ModelContext, cfg: ModelConfig, version: int) -> DecoderModel:
    types = layer_types(cfg, version)
    specs = rope_specs(cfg, cfg.head_dim, version)
    rotaries: dict[int, Rotary] = {}   # Gemma 1/2 share one table between the layer types
    for t in sorted(set(types)):
        rotaries.setdefault(id(specs[t]), Rotary(ctx, specs[t]))
    window = cfg.get("sliding_window")

    def layer(i):
        t = types[i]
        attn = GemmaAttention(ctx, cfg, rotaries[id(specs[t])], window if t == "sliding_attention" else None, version)
        mlp = GatedMLP(ctx, cfg.hidden_size, cfg.intermediate_size, gemma_activation(cfg))
        return DecoderLayer(ctx, cfg, attn, mlp, sandwich_norms=version >= 2)

    # HF multiplies by sqrt(hidden) rounded to the model dtype (matters in bf16); a Python
    # float, so the forward makes no host->device copy (which a CUDA graph capture refuses).
    return DecoderModel(ctx, cfg, layer, embed_scale=float(torch.tensor(cfg.hidden_size ** 0.5, dtype=ctx.dtype)))


class GemmaForCausalLM(CausalLM):
    version = 1

    def __init__(self, cfg: ModelConfig, ctx: ModelContext):
        super().__init__(cfg, ctx)
        if cfg.get("use_bidirectional_attention"):
            raise NotImplementedError("Gemma with use_bidirectional_attention (embedding models) is not supported")
        self.tie_word_embeddings = bool(cfg.get("tie_word_embeddings", True))   # Gemma's default
        self.model = gemma_model(ctx, cfg, self.version)
        self.lm_head = make_lm_head(ctx, cfg.hidden_size, cfg.vocab_size)
        if self.version >= 2:
            self.logit_soft_cap = hf_default(cfg, "final_logit_softcapping", self.version)

    def convert(self, weights):
        for name, t in weights:
            if name.endswith("norm.weight"):
                t = t.float() + 1.0   # Gemma's norms multiply by (1 + w); cast to the model dtype on copy
                if self.version >= 2:
                    parts = name.split(".")
                    parts[-2] = SANDWICH_NAMES.get(parts[-2], parts[-2])
                    name = ".".join(parts)
            yield name, t


class Gemma2ForCausalLM(GemmaForCausalLM):
    version = 2


class Gemma3ForCausalLM(GemmaForCausalLM):
    version = 3
