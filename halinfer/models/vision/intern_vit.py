"""InternViT in the transformers ``-hf`` layout (InternVL 2 / 2.5 / 3 / 3.5): class token
and absolute positions, pre-norm layers with layer-scale (lambda_1, lambda_2), optional
RMS q/k norms over the whole width (the 6B towers)."""
from __future__ import annotations

import torch
from torch import nn

from ..layers import ModelContext, hf_activation
from .blocks import SelfAttention, VisionMLP, norm


class InternLayer(nn.Module):
    def __init__(self, ctx: ModelContext, vc: dict):
        super().__init__()
        d, eps = vc["hidden_size"], vc.get("layer_norm_eps", 1e-6)
        kind = "rms" if vc.get("norm_type", "layer_norm") == "rms_norm" else "layer"
        self.attention = SelfAttention(ctx, d, vc["num_attention_heads"], "projection_layer",
                                       bool(vc.get("attention_bias", True)), bool(vc.get("use_qk_norm", False)))
        self.mlp = VisionMLP(ctx, d, vc["intermediate_size"], hf_activation(vc.get("hidden_act", "gelu")))
        self.layernorm_before, self.layernorm_after = norm(ctx, d, eps, kind), norm(ctx, d, eps, kind)
        self.lambda_1 = nn.Parameter(torch.ones(d, dtype=ctx.dtype), requires_grad=False)
        self.lambda_2 = nn.Parameter(torch.ones(d, dtype=ctx.dtype), requires_grad=False)

    def forward(self, x, cu_seqlens):
        x = x + self.lambda_1 * self.attention(self.layernorm_before(x), cu_seqlens)
        return x + self.lambda_2 * self.mlp(self.layernorm_after(x))


class InternVisionTower(nn.Module):
    def __init__(self, ctx: ModelContext, vc: dict, num_layers: int):
        super().__init__()
        d = vc["hidden_size"]
        size = vc["image_size"] if isinstance(vc["image_size"], int) else vc["image_size"][0]
        p = vc["patch_size"] if isinstance(vc["patch_size"], int) else vc["patch_size"][0]
        self.ops, self.patch, self.dtype = ctx.ops, p, ctx.dtype
        self.embeddings = nn.Module()
        self.embeddings.cls_token = nn.Parameter(torch.empty(1, 1, d, dtype=ctx.dtype), requires_grad=False)
        self.embeddings.patch_embeddings = nn.Module()
        self.embeddings.patch_embeddings.projection = proj = nn.Module()
        proj.weight = nn.Parameter(torch.empty(d, vc.get("num_channels", 3), p, p, dtype=ctx.dtype), requires_grad=False)
        proj.bias = nn.Parameter(torch.empty(d, dtype=ctx.dtype), requires_grad=False)
        self.embeddings.position_embeddings = nn.Parameter(torch.empty(1, (size // p) ** 2 + 1, d, dtype=ctx.dtype),
                                                           requires_grad=False)
        self.encoder = nn.Module()
        self.encoder.layer = nn.ModuleList(InternLayer(ctx, vc) for _ in range(num_layers))
        # use_mean_pooling=False: HF's last_hidden_state (feature layer -1) passes a final LayerNorm
        self.layernorm = None if vc.get("use_mean_pooling", True) else norm(ctx, d, vc.get("layer_norm_eps", 1e-6))

    def forward(self, pixels: torch.Tensor, final_norm: bool) -> torch.Tensor:
        """[B, C, S, S] tiles -> [B, 1 + (S/P)^2, D] (class token first)."""
        B, C, S, _ = pixels.shape
        P, g = self.patch, S // self.patch
        proj = self.embeddings.patch_embeddings.projection
        patches = pixels.reshape(B, C, g, P, g, P).permute(0, 2, 4, 1, 3, 5).reshape(B * g * g, C, P, P)
        x = self.ops.patch_embed(patches.to(self.dtype), proj.weight, proj.bias).view(B, g * g, -1)
        x = torch.cat((self.embeddings.cls_token.expand(B, 1, -1), x), dim=1) + self.embeddings.position_embeddings
        n, D = x.shape[1], x.shape[2]
        cu = torch.arange(0, B * n + 1, n, dtype=torch.int32, device=x.device)
        h = x.reshape(B * n, D)
        for layer in self.encoder.layer:
            h = layer(h, cu)
        if final_norm and self.layernorm is not None:
            h = self.layernorm(h)
        return h.view(B, n, D)
