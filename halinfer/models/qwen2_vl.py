"""Qwen2-VL and Qwen2.5-VL: the Qwen ViT (vision/qwen_vit.py) and a Qwen2 language model
whose rotary is M-RoPE: each frequency section (``mrope_section``) follows one axis of the
3-D (time, row, column) positions the encoder cache computes for image tokens; text
tokens have equal axes, so decode steps are plain rotary at the shifted position."""
from __future__ import annotations

import torch

from .layers import Rotary
from .llama import Qwen2ForCausalLM, rope_spec
from .vision.qwen_vit import QwenVisionTower
from .vision.vlm import VisionLanguageModel, text_config


class MRotary(Rotary):
    def __init__(self, ctx, spec, section: list[int], interleaved: bool = False):
        super().__init__(ctx, spec)
        self.section, self.interleaved = list(section), interleaved

    def forward(self, positions, q, k):
        if positions.ndim == 2:
            if self.interleaved:
                return self.ops.mrope(q, k, positions, self.cos_sin, self.section, self.is_neox, interleaved=True)
            return self.ops.mrope(q, k, positions, self.cos_sin, self.section, self.is_neox)
        return self.ops.rotary(q, k, positions, self.cos_sin, self.is_neox)

    def plain(self, positions) -> bool:
        return positions.ndim == 1

    @classmethod
    def install(cls, lm, ctx, cfg, section, interleaved: bool = False) -> None:
        """One M-RoPE module for every attention layer of the text model ``lm``."""
        rotary = cls(ctx, rope_spec(cfg, cfg.head_dim), section, interleaved=interleaved)
        for layer in lm.model.layers:
            layer.self_attn.rotary = rotary


def mrope_section(cfg, family: str) -> tuple[list[int], float, str, dict]:
    """(mrope_section, rope theta, rope type, rope parameters) of a VL text config."""
    theta, rtype, params = cfg.rope_params()
    section = params.get("mrope_section")
    if not section:
        raise ValueError(f"a {family} text config needs rope_parameters (or rope_scaling) with mrope_section")
    return section, theta, rtype, params


class Qwen2VLTextModel(Qwen2ForCausalLM):
    def __init__(self, cfg, ctx):
        section, theta, rtype, params = mrope_section(cfg, "Qwen2-VL")
        if rtype == "mrope":   # transformers 4 configs: {"type": "mrope", ...}; the frequencies are default
            params = {**params, "rope_type": "default", "type": "default", "rope_theta": theta}
            cfg = cfg.replace(rope_parameters=params, rope_scaling=None)
        super().__init__(cfg, ctx)
        MRotary.install(self, ctx, cfg, section)


def qwen_text_config(cfg):
    """text_config, or (transformers 4 checkpoints) the top level minus the vision part."""
    if cfg.get("text_config"):
        return text_config(cfg)
    return cfg.replace(vision_config=None)


class Qwen2VLForConditionalGeneration(VisionLanguageModel):
    v25 = False
    prefixes = (("model.visual.", "visual"), ("visual.", "visual"))
    lm_prefixes = VisionLanguageModel.lm_prefixes + (("model.", "model."),)

    def __init__(self, cfg, ctx):
        super().__init__(cfg, ctx)
        self.visual = QwenVisionTower(ctx, dict(cfg.vision_config), self.v25)
        self.language_model = Qwen2VLTextModel(qwen_text_config(cfg), ctx)

    def encode_images(self, items):
        pixels = torch.cat([it["pixel_values"] for it in items]).to(self.ctx.device, self.ctx.dtype)
        grids = [tuple(int(v) for v in g) for it in items for g in it["image_grid_thw"]]
        out = self.visual(pixels, grids)
        per = [t * h * w // self.visual.merge ** 2 for t, h, w in grids]
        return list(out.split(per))


class Qwen2_5_VLForConditionalGeneration(Qwen2VLForConditionalGeneration):
    v25 = True
