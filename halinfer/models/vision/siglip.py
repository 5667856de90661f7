"""The SigLIP vision tower (Gemma 3), with HF's parameter names: patch convolution with
bias plus learned absolute positions (no class token), CLIP-style pre-norm layers, and a
final LayerNorm (``post_layernorm``: transformers' last_hidden_state)."""
from __future__ import annotations

import torch
from torch import nn

from ..layers import ModelContext
from .blocks import norm
from .clip import CLIPLayer


class SiglipVisionTower(nn.Module):
    def __init__(self, ctx: ModelContext, vc: dict):
        super().__init__()
        d, p, c = vc["hidden_size"], vc["patch_size"], vc.get("num_channels", 3)
        vc = {"hidden_act": "gelu_pytorch_tanh", "layer_norm_eps": 1e-6, **vc}   # SiglipVisionConfig's defaults
        self.ops, self.patch, self.dtype = ctx.ops, p, ctx.dtype
        self.side = vc["image_size"] // p
        self.embeddings = nn.Module()
        self.embeddings.patch_embedding = pe = nn.Module()
        pe.weight = nn.Parameter(torch.empty(d, c, p, p, dtype=ctx.dtype), requires_grad=False)
        pe.bias = nn.Parameter(torch.empty(d, dtype=ctx.dtype), requires_grad=False)
        self.embeddings.position_embedding = pos = nn.Module()
        pos.weight = nn.Parameter(torch.empty(self.side ** 2, d, dtype=ctx.dtype), requires_grad=False)
        self.encoder = nn.Module()
        self.encoder.layers = nn.ModuleList(CLIPLayer(ctx, vc) for _ in range(vc["num_hidden_layers"]))
        self.post_layernorm = norm(ctx, d, vc["layer_norm_eps"])

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """[B, C, S, S] -> [B, (S/P)^2, D], patches row-major."""
        B, C, S, _ = pixels.shape
        P, g = self.patch, S // self.patch
        if g != self.side:
            raise ValueError(f"the vision tower takes {self.side * P}-px images, got {S} px (check the image processor)")
        patches = pixels.reshape(B, C, g, P, g, P).permute(0, 2, 4, 1, 3, 5).reshape(B * g * g, C, P, P)
        pe = self.embeddings.patch_embedding
        x = self.ops.patch_embed(patches.to(self.dtype), pe.weight, pe.bias).view(B, g * g, -1)
        x = x + self.embeddings.position_embedding.weight
        n, D = x.shape[1], x.shape[2]
        cu = torch.arange(0, B * n + 1, n, dtype=torch.int32, device=x.device)
        h = x.reshape(B * n, D)
        for layer in self.encoder.layers:
            h = layer(h, cu)
        return self.post_layernorm(h).view(B, n, D)
