"""Qwen3-VL, dense and MoE: the Qwen3-VL vision tower (vision/qwen3_vit.py) and a Qwen3
(dense) or Qwen3-MoE text model with interleaved M-RoPE (Qwen3-VL spreads the time / row /
column axes over the rotary frequencies round-robin: mrope_table(interleaved=True)) and
DeepStack: each early decoder layer i (i < number of DeepStack vision layers) adds the i-th
DeepStack features to the image tokens' hidden state after it.  Image positions are
Qwen2-VL's (3-D, from the encoder cache); images only (no video timestamps).

The MoE text model (Qwen3-VL-30B-A3B, 235B-A22B) is Qwen3-MoE's, with two differences
transformers' Qwen3VLMoeTextTopKRouter and checkpoints make: the top-k softmax weights are
always renormalised (the router reads no norm_topk_prob), and the experts come as fused
3-D tensors (moe.fused_expert_tensor); per-expert matrices load as Qwen3-MoE's do."""
from __future__ import annotations

from .llama import Qwen3ForCausalLM
from .moe import RouteSpec, fused_expert_tensor
from .qwen2_vl import MRotary, Qwen2VLForConditionalGeneration, mrope_section
from .qwen_moe import Qwen3MoeForCausalLM
from .vision.qwen3_vit import Qwen3VisionTower
from .vision.vlm import VisionLanguageModel, text_config


class InterleavedMRope:
    """Mixin for a Qwen3 text model: one interleaved M-RoPE for all its attention layers."""

    def __init__(self, cfg, ctx):
        section = mrope_section(cfg, "Qwen3-VL")[0]
        super().__init__(cfg, ctx)
        # transformers' Qwen3-VL text rotary is always interleaved (mrope_interleaved in the config says so)
        MRotary.install(self, ctx, cfg, section, interleaved=True)


class Qwen3VLTextModel(InterleavedMRope, Qwen3ForCausalLM):
    pass


class Qwen3VLMoeTextModel(InterleavedMRope, Qwen3MoeForCausalLM):
    def route_spec(self, cfg):
        return RouteSpec(top_k=cfg.num_experts_per_tok, scoring="softmax", renormalize=True)

    def convert(self, weights):
        H, I = self.cfg.hidden_size, self.cfg.moe_intermediate_size
        for name, t in weights:
            yield fused_expert_tensor(name, t, H, I) or (name, t)


class Qwen3VLForConditionalGeneration(VisionLanguageModel):
    prefixes = (("model.visual.", "visual"), ("visual.", "visual"))
    text_model = Qwen3VLTextModel

    def __init__(self, cfg, ctx):
        super().__init__(cfg, ctx)
        vc = dict(cfg.vision_config)
        self.visual = Qwen3VisionTower(ctx, vc)
        self.language_model = self.text_model(text_config(cfg), ctx)
        self.hidden = self.language_model.cfg.hidden_size
        if vc["out_hidden_size"] != self.hidden:
            raise ValueError(f"vision out_hidden_size {vc['out_hidden_size']} != text hidden_size {self.hidden}")
        self.n_deep = len(self.visual.deepstack_layers)

    def forward(self, input_ids, positions, meta, mm_embeds=None):
        lm = self.language_model.model
        if mm_embeds is None:
            return lm(input_ids, positions, meta)
        rows, feats = mm_embeds
        H = self.hidden
        x = lm.embed_tokens(input_ids)
        x = x.index_copy(0, rows, feats[:, :H].to(x.dtype))
        deep = [feats[:, H * (1 + i):H * (2 + i)] for i in range(self.n_deep)]
        return lm(input_ids, positions, meta, inputs_embeds=x, deepstack=(rows, deep))

    # pixel_values and image_grid_thw as Qwen2-VL's processor gives them; one feature row per merged patch
    encode_images = Qwen2VLForConditionalGeneration.encode_images


class Qwen3VLMoeForConditionalGeneration(Qwen3VLForConditionalGeneration):
    text_model = Qwen3VLMoeTextModel
