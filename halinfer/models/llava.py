"""LLaVA 1.5 in the llava-hf (transformers) layout: CLIP tower -> two-layer projector -> a
Llama/Mistral/Qwen2 language model.  Each ``<image>`` placeholder becomes one token per
patch ("default" strategy: the class token dropped)."""
from __future__ import annotations

import torch
from torch import nn

from .layers import hf_activation
from .vision.blocks import linear
from .vision.clip import CLIPVisionTower
from .vision.vlm import TOWER_AND_PROJECTOR_PREFIXES, VisionLanguageModel, build_text_model, text_config


def feature_layers(cfg) -> list[int]:
    layer = cfg.get("vision_feature_layer", -2)
    return list(layer) if isinstance(layer, (list, tuple)) else [layer]


class LlavaProjector(nn.Module):
    def __init__(self, ctx, k: int, n: int, act: str, bias: bool):
        super().__init__()
        self.ops, self.act = ctx.ops, act
        self.linear_1, self.linear_2 = linear(ctx, k, n, bias), linear(ctx, n, n, bias)

    def forward(self, x):
        return self.linear_2(self.ops.act(self.linear_1(x), self.act))


class LlavaForConditionalGeneration(VisionLanguageModel):
    prefixes = TOWER_AND_PROJECTOR_PREFIXES

    def __init__(self, cfg, ctx):
        super().__init__(cfg, ctx)
        vc = dict(cfg.vision_config)
        self.layers = feature_layers(cfg)
        n_total = vc["num_hidden_layers"]
        # hidden state i is the output of i layers: later layers would only be thrown away
        deepest = max(i if i >= 0 else n_total + 1 + i for i in self.layers)
        self.strategy = cfg.get("vision_feature_select_strategy", "default")
        self.vision_tower = CLIPVisionTower(ctx, vc, num_layers=deepest)
        self.n_total = n_total
        self.language_model = build_text_model(text_config(cfg), ctx)
        k = vc["hidden_size"] * len(self.layers)
        self.multi_modal_projector = LlavaProjector(ctx, k, self.language_model.cfg.hidden_size,
                                                    hf_activation(cfg.get("projector_hidden_act", "gelu")),
                                                    bool(cfg.get("multimodal_projector_bias", True)))

    def ignored(self, part, name):
        if part != "vision_tower":
            return False
        if name.startswith("post_layernorm."):
            return True
        return name.startswith("encoder.layers.") and int(name.split(".")[2]) >= len(self.vision_tower.encoder.layers)

    def image_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """[B, C, S, S] -> [B, tokens, text hidden]."""
        hs = self.vision_tower.hidden_states(pixels.to(self.ctx.dtype))
        picked = torch.cat([hs[i if i >= 0 else self.n_total + 1 + i] for i in self.layers], dim=-1)
        if self.strategy == "default":
            picked = picked[:, 1:]
        return self.multi_modal_projector(picked)

    def encode_images(self, items):
        pixels = torch.cat([it["pixel_values"] for it in items]).to(self.ctx.device)
        return list(self.image_features(pixels).unbind(0))


class LlavaNextForConditionalGeneration(LlavaForConditionalGeneration):
    """LLaVA-NeXT / 1.6: anyres tiles through the same tower and projector; features packed
    as the base tile, then the tiled map without its letterbox band, a learned newline
    after every row ("spatial_unpad")."""

    def __init__(self, cfg, ctx):
        super().__init__(cfg, ctx)
        self.newline = nn.Module()
        self.newline.weight = nn.Parameter(torch.empty(self.language_model.cfg.hidden_size, dtype=ctx.dtype),
                                           requires_grad=False)
        vc = cfg.vision_config
        self.tile, self.side = vc["image_size"], vc["image_size"] // vc["patch_size"]
        self.pinpoints = [tuple(p) for p in cfg.image_grid_pinpoints]

    def split_name(self, name):
        if name in ("image_newline", "model.image_newline"):
            return "newline", "weight"
        return super().split_name(name)

    def encode_images(self, items):
        from .vision.anyres import anyres_layout

        tiles = [it["pixel_values"].reshape(-1, *it["pixel_values"].shape[-3:]) for it in items]
        feats = self.image_features(torch.cat(tiles).to(self.ctx.device)).split([t.shape[0] for t in tiles])
        out, s = [], self.side
        nl = self.newline.weight
        for it, f in zip(items, feats):
            h, w = (int(v) for v in it["image_sizes"].reshape(-1)[:2])
            gr, gc, (r0, r1, c0, c1) = anyres_layout(h, w, self.pinpoints, self.tile, s)
            grid = f[1:1 + gr * gc].view(gr, gc, s, s, -1).permute(0, 2, 1, 3, 4).reshape(gr * s, gc * s, -1)
            grid = grid[r0:r1, c0:c1]
            grid = torch.cat((grid, nl.to(grid.dtype).expand(grid.shape[0], 1, -1)), dim=1)
            out.append(torch.cat((f[0], grid.reshape(-1, grid.shape[-1]))))
        return out
