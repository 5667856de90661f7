"""Tiny random vision-language checkpoints, saved with their processor so that
transformers' AutoProcessor / AutoModelForImageTextToText load them back.

Each recipe: the tiny byte-level tokenizer of tiny.py plus the family's image tokens, a
text model of tiny.BASE's shape, a vision tower of two layers, and 32-64 px images.
"""
from __future__ import annotations

import torch

from .tiny import BASE, CHAT_TEMPLATE, build_tokenizer

TEXT = {k: v for k, v in BASE.items() if k not in ("num_hidden_layers",)} | {"num_hidden_layers": 2}


def _tokenizer(path: str, tokens: list[str]):
    tok = build_tokenizer(path)
    tok.add_special_tokens({"additional_special_tokens": tokens})
    return tok


def _perturb(model, seed: int = 7) -> None:
    """Move norm weights off 1/0 so their loading is tested (as tiny._perturb_norms)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name or "ln_" in name or "layrnorm" in name or "lambda_" in name:
                p.add_((torch.randn(p.shape, generator=g) * 0.3).to(p.dtype))


def save_llava(path: str, seed: int = 0, strategy: str = "default", feature_layer=-2) -> str:
    import transformers as t

    tok = _tokenizer(path, ["<image>"])
    vc = t.CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                            image_size=32, patch_size=8, initializer_range=0.2)
    tc = t.LlamaConfig(**TEXT)
    cfg = t.LlavaConfig(vision_config=vc, text_config=tc, image_token_index=tok.convert_tokens_to_ids("<image>"),
                        image_seq_length=16 + (strategy == "full"), vision_feature_layer=feature_layer,
                        vision_feature_select_strategy=strategy)
    torch.manual_seed(seed)
    model = t.LlavaForConditionalGeneration(cfg)
    _perturb(model)
    model.save_pretrained(path)
    ip = t.CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    t.LlavaProcessor(image_processor=ip, tokenizer=tok, patch_size=8, vision_feature_select_strategy=strategy,
                     image_token="<image>", num_additional_image_tokens=1).save_pretrained(path)
    return path


def save_llava_next(path: str, seed: int = 0) -> str:
    import transformers as t

    tok = _tokenizer(path, ["<image>"])
    vc = t.CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                            image_size=32, patch_size=8, initializer_range=0.2)
    pins = [[32, 64], [64, 32], [64, 64], [32, 96]]
    cfg = t.LlavaNextConfig(vision_config=vc, text_config=t.LlamaConfig(**TEXT),
                            image_token_index=tok.convert_tokens_to_ids("<image>"), image_grid_pinpoints=pins,
                            vision_feature_layer=-2, vision_feature_select_strategy="default", image_seq_length=16)
    torch.manual_seed(seed)
    model = t.LlavaNextForConditionalGeneration(cfg)
    _perturb(model)
    with torch.no_grad():
        model.model.image_newline.normal_(0, 1.0)
    model.save_pretrained(path)
    ip = t.LlavaNextImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32},
                                   image_grid_pinpoints=pins)
    t.LlavaNextProcessor(image_processor=ip, tokenizer=tok, patch_size=8, vision_feature_select_strategy="default",
                         image_token="<image>", num_additional_image_tokens=1).save_pretrained(path)
    return path


def save_qwen2_vl(path: str, seed: int = 0, v25: bool = False, **text_overrides) -> str:
    import transformers as t

    specials = ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]
    tok = _tokenizer(path, specials)
    ids = {s: tok.convert_tokens_to_ids(s) for s in specials}
    text = dict(TEXT, num_key_value_heads=2, head_dim=24,
                rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 5, 5]})
    text.update(text_overrides)
    if v25:
        # windows of 2x2 merged patches (window_size 32 px / patch 8 = 4 patches); block 1 full
        vision = dict(depth=2, hidden_size=32, intermediate_size=48, num_heads=2, patch_size=8,
                      spatial_merge_size=2, temporal_patch_size=2, window_size=32, out_hidden_size=96,
                      fullatt_block_indexes=[1], initializer_range=0.2)
        cfg_cls, model_cls = t.Qwen2_5_VLConfig, t.Qwen2_5_VLForConditionalGeneration
    else:
        vision = dict(depth=2, embed_dim=32, hidden_size=96, mlp_ratio=2, num_heads=2, patch_size=8,
                      spatial_merge_size=2, temporal_patch_size=2, initializer_range=0.2)
        cfg_cls, model_cls = t.Qwen2VLConfig, t.Qwen2VLForConditionalGeneration
    vision["out_hidden_size" if v25 else "hidden_size"] = text["hidden_size"]   # the merger feeds the text model
    cfg = cfg_cls(text_config=text, vision_config=vision, image_token_id=ids["<|image_pad|>"],
                  video_token_id=ids["<|video_pad|>"], vision_start_token_id=ids["<|vision_start|>"],
                  vision_end_token_id=ids["<|vision_end|>"], tie_word_embeddings=False)
    torch.manual_seed(seed)
    model = model_cls(cfg)
    _perturb(model)
    model.save_pretrained(path)
    # 8 px patches merged 2x2: sides round to multiples of 16; 256..4096 pixels (16..64 px squares)
    ip = t.Qwen2VLImageProcessor(patch_size=8, merge_size=2, temporal_patch_size=2,
                                 size={"shortest_edge": 256, "longest_edge": 4096})
    _save_processor_parts(path, ip, tok, "Qwen2VLImageProcessor", "Qwen2VLProcessor")
    return path


def _save_processor_parts(path: str, ip, tok, ip_type: str, proc_class: str, **proc) -> None:
    """Qwen2-VL's and InternVL's processors want a video processor, which needs torchvision:
    save the image processor's settings as transformers 5 does (the "image_processor" entry of
    processor_config.json, no preprocessor_config.json) plus the tokenizer."""
    import json
    import os

    d = ip.to_dict()
    d["image_processor_type"] = ip_type
    with open(os.path.join(path, "processor_config.json"), "w") as f:
        json.dump({"image_processor": d, "processor_class": proc_class, **proc}, f, indent=2)
    tok.save_pretrained(path)


def save_internvl(path: str, seed: int = 0, text: str = "qwen2", **text_overrides) -> str:
    """text: "qwen2" (InternVL 2.5 / 3 -1B style) or "llama" (the reference of an InternLM2 text model)."""
    import transformers as t

    tok = _tokenizer(path, ["<img>", "</img>", "<IMG_CONTEXT>"])
    vc = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=32,
              patch_size=8, initializer_range=0.2, use_mean_pooling=True)
    tc = (t.Qwen2Config if text == "qwen2" else t.LlamaConfig)(**{**TEXT, **text_overrides})
    cfg = t.InternVLConfig(vision_config=vc, text_config=tc.to_dict(),
                           image_token_id=tok.convert_tokens_to_ids("<IMG_CONTEXT>"), downsample_ratio=0.5,
                           vision_feature_layer=-1, vision_feature_select_strategy="default")
    torch.manual_seed(seed)
    model = t.InternVLForConditionalGeneration(cfg)
    _perturb(model)
    with torch.no_grad():   # HF initialises the class token and positions to zero
        emb = model.model.vision_tower.embeddings
        emb.cls_token.normal_(0, 0.5)
        emb.position_embeddings.normal_(0, 0.5)
    model.save_pretrained(path)
    # 32-px tiles, up to 4 per image (plus a thumbnail when tiled)
    # (ImageNet statistics, which InternVL's remote code hard-wires, so its conversion sees the same pixels)
    ip = t.GotOcr2ImageProcessor(size={"height": 32, "width": 32}, crop_to_patches=True, min_patches=1,
                                 max_patches=4, image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225])
    _save_processor_parts(path, ip, tok, "GotOcr2ImageProcessor", "InternVLProcessor", image_seq_length=4)
    return path


def save_qwen3_vl(path: str, seed: int = 0, moe: bool = False, expert_layout: str = "published",
                  **text_overrides) -> str:
    """Qwen3-VL: a 3-block tower (8-px patches, 2x2 merge) with DeepStack after blocks 0 and
    1, learned positions on a 4x4 grid (resampled to every image's grid), and a Qwen3 text
    model with interleaved M-RoPE over its 12 rotary frequencies.

    moe: Qwen3-VL-MoE (30B-A3B style): 3 text layers, 4 experts of width 32, top 2; layer 1
    (a DeepStack layer) dense via mlp_only_layers.  expert_layout: "published" rewrites
    the fused expert tensors transposed, [E, H, 2I] / [E, I, H], as Qwen's checkpoints
    store them (transformers transposes them back on loading); "save_pretrained" keeps
    what transformers 5 writes, the module's [E, 2I, H] / [E, H, I]."""
    import transformers as t

    specials = ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]
    tok = _tokenizer(path, specials)
    ids = {s: tok.convert_tokens_to_ids(s) for s in specials}
    text = dict(TEXT, num_key_value_heads=2, head_dim=24,
                rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [4, 4, 4],
                                 "mrope_interleaved": True})
    if moe:
        text.update(num_hidden_layers=3, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32,
                    mlp_only_layers=[1], decoder_sparse_step=1)
    text.update(text_overrides)
    vision = dict(depth=3, hidden_size=32, intermediate_size=48, num_heads=2, patch_size=8, spatial_merge_size=2,
                  temporal_patch_size=2, out_hidden_size=text["hidden_size"], num_position_embeddings=16,
                  deepstack_visual_indexes=[0, 1], initializer_range=0.2)
    cfg_cls, model_cls = (t.Qwen3VLMoeConfig, t.Qwen3VLMoeForConditionalGeneration) if moe else \
        (t.Qwen3VLConfig, t.Qwen3VLForConditionalGeneration)
    cfg = cfg_cls(text_config=text, vision_config=vision, image_token_id=ids["<|image_pad|>"],
                  video_token_id=ids["<|video_pad|>"], vision_start_token_id=ids["<|vision_start|>"],
                  vision_end_token_id=ids["<|vision_end|>"], tie_word_embeddings=False)
    torch.manual_seed(seed)
    model = model_cls(cfg)
    _perturb(model)
    with torch.no_grad():
        model.model.visual.pos_embed.weight.normal_(0, 0.5)
    model.save_pretrained(path)
    if moe and expert_layout == "published":
        _transpose_fused_experts(path)
    elif moe and expert_layout != "save_pretrained":
        raise ValueError(f"expert_layout {expert_layout!r}: 'published' or 'save_pretrained'")
    ip = t.Qwen2VLImageProcessor(patch_size=8, merge_size=2, temporal_patch_size=2,
                                 size={"shortest_edge": 256, "longest_edge": 4096},
                                 image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])
    _save_processor_parts(path, ip, tok, "Qwen2VLImageProcessor", "Qwen3VLProcessor")
    return path


def save_qwen3_vl_moe(path: str, seed: int = 0, expert_layout: str = "published", **text_overrides) -> str:
    return save_qwen3_vl(path, seed, moe=True, expert_layout=expert_layout, **text_overrides)


def _transpose_fused_experts(path: str) -> None:
    """model.safetensors with every ``.experts.gate_up_proj`` / ``.experts.down_proj`` transposed."""
    import os

    from safetensors.torch import load_file, save_file

    file = os.path.join(path, "model.safetensors")
    sd = load_file(file)
    for k, v in sd.items():
        if k.endswith((".experts.gate_up_proj", ".experts.down_proj")):
            sd[k] = v.transpose(1, 2).contiguous()
    save_file(sd, file, metadata={"format": "pt"})


def save_gemma3(path: str, seed: int = 0, mm_tokens: int = 16, sliding_window: int = 11, tied: bool = False) -> str:
    """Gemma 3: SigLIP at 32 px / 4-px patches (an 8x8 grid), average-pooled to ``mm_tokens``
    tokens; a 4-layer text model whose sliding layers' window is shorter than an image, so the
    (causal or same image) and window composition is exercised.  Untied lm_head by default
    (a tied tiny Gemma only repeats its last token; ``tied`` tests the tied layout)."""
    import transformers as t

    specials = ["<start_of_image>", "<end_of_image>", "<image_soft_token>"]
    tok = build_tokenizer(path)
    tok.add_special_tokens({"additional_special_tokens": specials})
    tok = t.PreTrainedTokenizerFast(tokenizer_object=tok._tokenizer, bos_token="<s>", eos_token="</s>",
                                    pad_token="<pad>", extra_special_tokens={
                                        "boi_token": "<start_of_image>", "eoi_token": "<end_of_image>",
                                        "image_token": "<image_soft_token>"})
    tok.chat_template = CHAT_TEMPLATE
    ids = {s: tok.convert_tokens_to_ids(s) for s in specials}
    text = dict(TEXT, num_hidden_layers=4, head_dim=24, query_pre_attn_scalar=24, sliding_window=sliding_window,
                layer_types=["sliding_attention", "full_attention", "sliding_attention", "full_attention"],
                rope_parameters={"full_attention": {"rope_type": "linear", "factor": 2.0, "rope_theta": 100000.0},
                                 "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}},
                hidden_activation="gelu_pytorch_tanh", rms_norm_eps=1e-6)
    text.pop("vocab_size", None)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=32,
                  patch_size=4, vision_use_head=False, layer_norm_eps=1e-6)
    cfg = t.Gemma3Config(text_config=dict(text, vocab_size=512), vision_config=vision, mm_tokens_per_image=mm_tokens,
                         boi_token_index=ids["<start_of_image>"], eoi_token_index=ids["<end_of_image>"],
                         image_token_index=ids["<image_soft_token>"], initializer_range=0.5,
                         tie_word_embeddings=tied)
    torch.manual_seed(seed)
    model = t.Gemma3ForConditionalGeneration(cfg)
    _perturb(model)
    with torch.no_grad():   # HF initialises the projection to zeros: give it random values
        model.model.multi_modal_projector.mm_input_projection_weight.normal_(0, 1.5)
    model.save_pretrained(path)
    ip = t.Gemma3ImageProcessor(size={"height": 32, "width": 32}, do_pan_and_scan=False)
    t.Gemma3Processor(image_processor=ip, tokenizer=tok, image_seq_length=mm_tokens).save_pretrained(path)
    return path


SAVERS = {"llava": save_llava, "llava-next": save_llava_next, "qwen2-vl": save_qwen2_vl, "internvl": save_internvl,
          "qwen2.5-vl": lambda path, seed=0, **kw: save_qwen2_vl(path, seed, v25=True, **kw), "gemma3": save_gemma3,
          "qwen3-vl": save_qwen3_vl, "qwen3-vl-moe": save_qwen3_vl_moe}


def random_image(seed: int, w: int, h: int):
    import numpy as np
    from PIL import Image

    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))
