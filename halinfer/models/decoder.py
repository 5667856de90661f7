"""A pre-norm decoder stack with pluggable attention and feed-forward blocks.

The MoE and MLA families differ from Llama in what sits inside a layer (a
mixture of experts, latent attention, LayerNorm instead of RMSNorm) but not in how
layers are wired: ``x = x + attn(norm(x)); x = x + ffn(norm(x))``.  The residual
stream is carried through the fused add+norm of ``Ops.rms_norm`` / ``layer_norm``.
An attention block is called ``attn(positions, x, meta)``, a feed-forward block ``ffn(x)``.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from ..core.config import ModelConfig
from .base import make_embedding
from .layers import LayerNorm, ModelContext, RMSNorm


def make_norm(ctx: ModelContext, cfg: ModelConfig, kind: str = "rms"):
    # Families name the epsilon differently (StarCoder2: norm_epsilon).
    eps = cfg.get("rms_norm_eps") or cfg.get("norm_epsilon") or cfg.get("layer_norm_eps") or \
        (1e-6 if kind == "rms" else 1e-5)
    return RMSNorm(ctx, cfg.hidden_size, eps) if kind == "rms" else LayerNorm(ctx, cfg.hidden_size, eps)


class DecoderLayer(nn.Module):
    """residual_scale multiplies both blocks' outputs before they join the stream (MiniCPM).
    sandwich_norms: a norm on each block's output before it joins the stream
    (GLM-4-0414's post_self_attn_layernorm / post_mlp_layernorm; Gemma 2/3 load theirs under these names)."""

    def __init__(self, ctx: ModelContext, cfg: ModelConfig, attn: nn.Module, mlp: nn.Module, norm: str = "rms",
                 residual_scale: float = 1.0, sandwich_norms: bool = False):
        super().__init__()
        self.input_layernorm = make_norm(ctx, cfg, norm)
        self.self_attn = attn
        self.post_attention_layernorm = make_norm(ctx, cfg, norm)
        self.mlp = mlp
        self.residual_scale = residual_scale
        self.post_self_attn_layernorm = make_norm(ctx, cfg, norm) if sandwich_norms else None
        self.post_mlp_layernorm = make_norm(ctx, cfg, norm) if sandwich_norms else None

    def forward(self, positions, x, residual, meta):
        if residual is None:
            residual = x
            x = self.input_layernorm(x)
        else:
            x, residual = self.input_layernorm(x, residual)
        x = self.self_attn(positions, x, meta)
        if self.post_self_attn_layernorm is not None:
            x = self.post_self_attn_layernorm(x)
        if self.residual_scale != 1.0:
            x = x * self.residual_scale
        x, residual = self.post_attention_layernorm(x, residual)
        x = self.mlp(x)
        if self.post_mlp_layernorm is not None:
            x = self.post_mlp_layernorm(x)
        if self.residual_scale != 1.0:
            x = x * self.residual_scale
        return x, residual


class DecoderModel(nn.Module):
    """Embedding (times embed_scale), the layers ``make_layer(i)`` builds, final norm."""

    def __init__(self, ctx: ModelContext, cfg: ModelConfig, make_layer: Callable[[int], nn.Module],
                 norm: str = "rms", embed_scale: float = 1.0):
        super().__init__()
        self.embed_tokens = make_embedding(ctx, cfg.vocab_size, cfg.hidden_size)
        self.embed_scale = embed_scale
        self.layers = nn.ModuleList(make_layer(i) for i in range(cfg.num_hidden_layers))
        self.norm = make_norm(ctx, cfg, norm)

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor, meta, inputs_embeds=None,
                embeds_scaled: bool = False, deepstack=None) -> torch.Tensor:
        # inputs_embeds: the embedded tokens with image features merged in (vision-language models);
        # embeds_scaled: they already carry embed_scale (Gemma 3 scales text before merging images)
        x = self.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds
        if self.embed_scale != 1.0 and not embeds_scaled:
            x = x * self.embed_scale
        residual = None
        for i, layer in enumerate(self.layers):
            x, residual = layer(positions, x, residual, meta)
            if deepstack is not None and i < len(deepstack[1]):
                # Qwen3-VL's DeepStack: visual features of a deeper vision layer added to the
                # image rows' hidden state (x + residual) after decoder layer i
                rows, feats = deepstack[0], deepstack[1][i]
                x = x.index_add(0, rows, feats.to(x.dtype))
        x, _ = self.norm(x, residual)
        return x
