"""InternVL 2 / 2.5 / 3 / 3.5 (dense) in the transformers ``-hf`` layout
(InternVLForConditionalGeneration): InternViT per 448-px tile (dynamic tiling is the
image processor's), the class token dropped, a 2x pixel-unshuffle (downsample_ratio 0.5:
each 2x2 patch square becomes one token of 4x the width), then LayerNorm + two linears
into a Qwen2 / Llama / InternLM2 text model."""
from __future__ import annotations

import torch
from torch import nn

from .layers import hf_activation
from .vision.blocks import linear, norm
from .vision.intern_vit import InternVisionTower
from .vision.vlm import VisionLanguageModel, build_text_model, text_config


class InternVLProjector(nn.Module):
    def __init__(self, ctx, k: int, n: int, act: str):
        super().__init__()
        self.ops, self.act = ctx.ops, act
        self.layer_norm = norm(ctx, k, 1e-5)
        self.linear_1, self.linear_2 = linear(ctx, k, n), linear(ctx, n, n)

    def forward(self, x):
        return self.linear_2(self.ops.act(self.linear_1(self.layer_norm(x)), self.act))


def pixel_unshuffle(x: torch.Tensor, ratio: float) -> torch.Tensor:
    """[B, G, G, C] patch grid -> [B, (G*r)^2, C/r^2]: each (1/r x 1/r) square of patches
    becomes one token, its channels ordered as InternVL's pixel_shuffle orders them."""
    B, G, _, C = x.shape
    f = int(round(1 / ratio))
    g = G // f
    x = x.reshape(B, G, g, C * f)                 # merge f neighbours along the second axis
    x = x.permute(0, 2, 1, 3).reshape(B, g, g, C * f * f)   # then f along the first
    return x.permute(0, 2, 1, 3).reshape(B, g * g, C * f * f)


class InternVLForConditionalGeneration(VisionLanguageModel):
    prefixes = (("model.vision_tower.", "vision_tower"), ("vision_tower.", "vision_tower"),
                ("model.multi_modal_projector.", "multi_modal_projector"),
                ("multi_modal_projector.", "multi_modal_projector"))

    def __init__(self, cfg, ctx):
        super().__init__(cfg, ctx)
        vc = dict(cfg.vision_config)
        n = vc["num_hidden_layers"]
        layer = cfg.get("vision_feature_layer", -1)
        self.final_norm = layer == -1
        self.depth = n if layer == -1 else (layer if layer >= 0 else n + 1 + layer)
        self.strategy = cfg.get("vision_feature_select_strategy", "default")
        self.ratio = float(cfg.get("downsample_ratio", 0.5))
        self.vision_tower = InternVisionTower(ctx, vc, self.depth)
        self.language_model = build_text_model(text_config(cfg), ctx)
        k = vc["hidden_size"] * int(round(1 / self.ratio)) ** 2
        self.multi_modal_projector = InternVLProjector(ctx, k, self.language_model.cfg.hidden_size,
                                                       hf_activation(cfg.get("projector_hidden_act", "gelu")))

    def ignored(self, part, name):
        if part != "vision_tower":
            return False
        if name.startswith("layernorm.") and self.vision_tower.layernorm is None:
            return True
        return name.startswith("encoder.layer.") and int(name.split(".")[2]) >= self.depth

    def tie_embeddings(self):
        self.language_model.tie_embeddings()

    def encode_images(self, items):
        tiles = [it["pixel_values"] for it in items]
        x = self.vision_tower(torch.cat(tiles).to(self.ctx.device), self.final_norm)
        if self.strategy == "default":
            x = x[:, 1:]
        B, n, C = x.shape
        G = int(round(n ** 0.5))
        feats = self.multi_modal_projector(pixel_unshuffle(x.reshape(B, G, G, C), self.ratio))
        per = [t.shape[0] for t in tiles]
        return [f.reshape(-1, f.shape[-1]) for f in feats.split(per)]
