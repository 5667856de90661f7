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


def pixel_unshuffle(x: torch.Tensor, ratio: float, v2: bool = True) -> torch.Tensor:
    """[B, G, G, C] patch grid -> [B, (G*r)^2, C/r^2]: each (1/r x 1/r) square of patches
    becomes one token, its channels ordered as InternVL's pixel_shuffle orders them."""
    B, G, _, C = x.shape
    f = int(round(1 / ratio))
    g = G // f
    x = x.reshape(B, G, g, C * f)                 # merge f neighbours along the second axis
    x = x.permute(0, 2, 1, 3).reshape(B, g, g, C * f * f)   # then f along the first
    if v2:   # ps_version v2 (every -hf checkpoint) swaps the grid's axes back; v1 (InternVL 1.5) does not
        x = x.permute(0, 2, 1, 3)
    return x.reshape(B, g * g, C * f * f)


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
        self.ps_v2 = cfg.get("ps_version", "v2") != "v1"
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

    def encode_images(self, items):
        tiles = [it["pixel_values"] for it in items]
        x = self.vision_tower(torch.cat(tiles).to(self.ctx.device), self.final_norm)
        if self.strategy == "default":
            x = x[:, 1:]
        B, n, C = x.shape
        G = int(round(n ** 0.5))
        feats = self.multi_modal_projector(pixel_unshuffle(x.reshape(B, G, G, C), self.ratio, self.ps_v2))
        per = [t.shape[0] for t in tiles]
        return [f.reshape(-1, f.shape[-1]) for f in feats.split(per)]


# InternVLChatModel (OpenGVLab's remote code) -> the -hf names above; q/k/v arrive fused.
CHAT_NAMES = [
    (r"^vision_model\.embeddings\.class_embedding$", "vision_tower.embeddings.cls_token"),
    (r"^vision_model\.embeddings\.patch_embedding\.", "vision_tower.embeddings.patch_embeddings.projection."),
    (r"^vision_model\.embeddings\.position_embedding$", "vision_tower.embeddings.position_embeddings"),
    (r"^vision_model\.encoder\.layers\.(\d+)\.attn\.proj\.", r"vision_tower.encoder.layer.\1.attention.projection_layer."),
    (r"^vision_model\.encoder\.layers\.(\d+)\.attn\.(q|k)_norm\.", r"vision_tower.encoder.layer.\1.attention.\2_norm."),
    (r"^vision_model\.encoder\.layers\.(\d+)\.ls1$", r"vision_tower.encoder.layer.\1.lambda_1"),
    (r"^vision_model\.encoder\.layers\.(\d+)\.ls2$", r"vision_tower.encoder.layer.\1.lambda_2"),
    (r"^vision_model\.encoder\.layers\.(\d+)\.norm1\.", r"vision_tower.encoder.layer.\1.layernorm_before."),
    (r"^vision_model\.encoder\.layers\.(\d+)\.norm2\.", r"vision_tower.encoder.layer.\1.layernorm_after."),
    (r"^vision_model\.encoder\.layers\.(\d+)\.mlp\.", r"vision_tower.encoder.layer.\1.mlp."),
    (r"^mlp1\.0\.", "multi_modal_projector.layer_norm."),
    (r"^mlp1\.1\.", "multi_modal_projector.linear_1."),
    (r"^mlp1\.3\.", "multi_modal_projector.linear_2."),
]


def chat_config(cfg):
    """An InternVLChatModel config in the -hf field names this module reads."""
    vc = dict(cfg.vision_config)
    vc.update(attention_bias=vc.get("qkv_bias", True), use_qk_norm=vc.get("qk_normalization", False),
              use_mean_pooling=True)   # InternVisionModel has no final norm
    return cfg.replace(vision_config=vc, text_config=dict(cfg.llm_config),
                       vision_feature_layer=cfg.get("select_layer", -1), vision_feature_select_strategy="default",
                       ps_version=cfg.get("ps_version", "v1"))


class InternVLChatModel(InternVLForConditionalGeneration):
    """The original remote-code layout (InternVL 1.5 / 2 / 2.5 / 3 as OpenGVLab publishes them):
    the same computation under other names (converter and test: testing/convert_vlm.py)."""

    lm_prefixes = (("language_model.", ""),)   # the text model's own layout (Qwen2, Llama, InternLM2)

    def __init__(self, cfg, ctx):
        super().__init__(chat_config(cfg), ctx)

    def load_weights(self, weights):
        return super().load_weights(self._hf_names(weights))

    def _hf_names(self, weights):
        import re

        for name, t in weights:
            m = re.match(r"^vision_model\.encoder\.layers\.(\d+)\.attn\.qkv\.(weight|bias)$", name)
            if m:
                base = f"vision_tower.encoder.layer.{m.group(1)}.attention"
                for part, chunk in zip(("q_proj", "k_proj", "v_proj"), t.chunk(3, dim=0)):
                    yield f"{base}.{part}.{m.group(2)}", chunk
                continue
            for pat, repl in CHAT_NAMES:
                if re.match(pat, name):
                    name = re.sub(pat, repl, name)
                    break
            yield name, t
