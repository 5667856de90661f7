"""Gemma 3, the full model (Gemma3ForConditionalGeneration): a SigLIP tower at a fixed
image size, a projector (average-pool the patch grid down to mm_tokens_per_image tokens,
Gemma RMSNorm, a bias-free linear) and the Gemma 3 text model (gemma.py).

Image tokens attend to every token of their own image, in both directions, inside the
otherwise causal text attention (transformers: (causal or same image) and sliding window).
The front end marks Gemma 3's images ``bidirectional``; the encoder cache turns that into
per-token key spans (AttentionMetadata.bidir_spans) and the scheduler never ends a prefill
chunk inside such an image.  The merged image rows are not multiplied by the embedding
scale: transformers scales the token embeddings before it scatters the image features.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .gemma import Gemma3ForCausalLM
from .vision.blocks import linear
from .vision.siglip import SiglipVisionTower
from .vision.vlm import TOWER_AND_PROJECTOR_PREFIXES, VisionLanguageModel, text_config
from .layers import RMSNorm


class Gemma3Projector(nn.Module):
    def __init__(self, ctx, vc: dict, text_hidden: int, tokens: int):
        super().__init__()
        d = vc["hidden_size"]
        self.side = vc["image_size"] // vc["patch_size"]
        per_side = int(round(tokens ** 0.5))
        if per_side * per_side != tokens or self.side % per_side:
            raise ValueError(f"mm_tokens_per_image {tokens} must be a square whose side divides the "
                             f"{self.side}-patch grid")
        self.kernel = self.side // per_side
        self.mm_soft_emb_norm = RMSNorm(ctx, d, vc.get("layer_norm_eps", 1e-6))
        self.mm_input_projection = linear(ctx, d, text_hidden, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, side^2, D] patches -> [B, tokens, text hidden]."""
        B, n, D = x.shape
        grid = x.transpose(1, 2).reshape(B, D, self.side, self.side)
        pooled = F.avg_pool2d(grid, self.kernel, self.kernel).flatten(2).transpose(1, 2)
        return self.mm_input_projection(self.mm_soft_emb_norm(pooled.reshape(-1, D))).view(B, -1,
                                                                                            self.mm_input_projection.out_features)


class Gemma3ForConditionalGeneration(VisionLanguageModel):
    prefixes = TOWER_AND_PROJECTOR_PREFIXES

    def __init__(self, cfg, ctx):
        super().__init__(cfg, ctx)
        vc = dict(cfg.vision_config)
        tcfg = text_config(cfg)
        if tcfg.get("tie_word_embeddings") is None:
            tcfg = tcfg.replace(tie_word_embeddings=True)   # Gemma3ForConditionalGeneration ties lm_head
        self.language_model = Gemma3ForCausalLM(tcfg, ctx)
        self.tie_word_embeddings = self.language_model.tie_word_embeddings
        self.vision_tower = SiglipVisionTower(ctx, vc)
        self.tokens = int(cfg.get("mm_tokens_per_image", 256))
        self.multi_modal_projector = Gemma3Projector(ctx, vc, self.language_model.cfg.hidden_size, self.tokens)
        self.image_token_id = cfg.get("image_token_id", cfg.get("image_token_index"))

    def ignored(self, part, name):
        return part == "vision_tower" and name.startswith("head.")   # vision_use_head: not used by Gemma 3

    def load_weights(self, weights):
        return super().load_weights(self._converted(weights))

    def _converted(self, weights):
        for name, t in weights:
            if name.endswith("multi_modal_projector.mm_input_projection_weight"):
                # stored [vision, text] for x @ W; our linear holds [out, in]
                name, t = name[:-len("_weight")] + ".weight", t.t().contiguous()
            elif name.endswith("multi_modal_projector.mm_soft_emb_norm.weight"):
                t = t.float() + 1.0      # Gemma's norms multiply by (1 + w)
            yield name, t

    def forward(self, input_ids, positions, meta, mm_embeds=None):
        lm = self.language_model.model
        if mm_embeds is None:
            return lm(input_ids, positions, meta)
        ids = input_ids
        vocab = lm.embed_tokens.weight.shape[0] if hasattr(lm.embed_tokens, "weight") else None
        if self.image_token_id is not None and vocab is not None and self.image_token_id >= vocab:
            ids = torch.where(ids == self.image_token_id, torch.zeros_like(ids), ids)   # as transformers does
        x = lm.embed_tokens(ids) * lm.embed_scale
        rows, feats = mm_embeds
        x = x.index_copy(0, rows, feats.to(x.dtype))
        return lm(input_ids, positions, meta, inputs_embeds=x, embeds_scaled=True)

    def encode_images(self, items):
        pixels = torch.cat([it["pixel_values"] for it in items]).to(self.ctx.device)
        return list(self.multi_modal_projector(self.vision_tower(pixels)).unbind(0))
