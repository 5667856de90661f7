"""The CLIP vision tower (LLaVA 1.5 / LLaVA-NeXT), with HF's parameter names."""
from __future__ import annotations

import torch
from torch import nn

from ..layers import ModelContext, hf_activation
from .blocks import SelfAttention, VisionMLP, norm


class CLIPLayer(nn.Module):
    def __init__(self, ctx: ModelContext, vc: dict):
        super().__init__()
        d, eps = vc["hidden_size"], vc.get("layer_norm_eps", 1e-5)
        self.layer_norm1, self.layer_norm2 = norm(ctx, d, eps), norm(ctx, d, eps)
        self.self_attn = SelfAttention(ctx, d, vc["num_attention_heads"])
        self.mlp = VisionMLP(ctx, d, vc["intermediate_size"], hf_activation(vc.get("hidden_act", "quick_gelu")))

    def forward(self, x, cu_seqlens):
        x = x + self.self_attn(self.layer_norm1(x), cu_seqlens)
        return x + self.mlp(self.layer_norm2(x))


class CLIPEmbeddings(nn.Module):
    def __init__(self, ctx: ModelContext, vc: dict):
        super().__init__()
        d, p, c = vc["hidden_size"], vc["patch_size"], vc.get("num_channels", 3)
        self.ops, self.patch = ctx.ops, p
        n = (vc["image_size"] // p) ** 2 + 1
        self.class_embedding = nn.Parameter(torch.empty(d, dtype=ctx.dtype), requires_grad=False)
        self.patch_embedding = nn.Module()
        self.patch_embedding.weight = nn.Parameter(torch.empty(d, c, p, p, dtype=ctx.dtype), requires_grad=False)
        self.position_embedding = nn.Module()
        self.position_embedding.weight = nn.Parameter(torch.empty(n, d, dtype=ctx.dtype), requires_grad=False)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """[B, C, S, S] -> [B, 1 + (S/P)^2, D]: class token first, patches row-major."""
        B, C, S, _ = pixels.shape
        P, g = self.patch, S // self.patch
        patches = pixels.reshape(B, C, g, P, g, P).permute(0, 2, 4, 1, 3, 5).reshape(B * g * g, C, P, P)
        x = self.ops.patch_embed(patches, self.patch_embedding.weight).view(B, g * g, -1)
        cls = self.class_embedding.expand(B, 1, -1)
        return torch.cat((cls, x), dim=1) + self.position_embedding.weight


class CLIPVisionTower(nn.Module):
    def __init__(self, ctx: ModelContext, vc: dict, num_layers: int | None = None):
        super().__init__()
        d, eps = vc["hidden_size"], vc.get("layer_norm_eps", 1e-5)
        self.embeddings = CLIPEmbeddings(ctx, vc)
        self.pre_layrnorm = norm(ctx, d, eps)    # sic: HF's name
        self.encoder = nn.Module()
        self.encoder.layers = nn.ModuleList(CLIPLayer(ctx, vc) for _ in range(num_layers or vc["num_hidden_layers"]))

    def hidden_states(self, pixels: torch.Tensor) -> list[torch.Tensor]:
        """Every hidden state, [B, n, D] each: after the embeddings (and pre-norm), then after
        each layer, as HF's output_hidden_states lists them."""
        x = self.pre_layrnorm(self.embeddings(pixels))
        B, n, D = x.shape
        cu = torch.arange(0, B * n + 1, n, dtype=torch.int32, device=x.device)
        h = x.reshape(B * n, D)
        out = [x]
        for layer in self.encoder.layers:
            h = layer(h, cu)
            out.append(h.view(B, n, D))
        return out
