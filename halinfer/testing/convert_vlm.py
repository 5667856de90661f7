"""A transformers InternVL (-hf) checkpoint rewritten in OpenGVLab's remote-code layout
(InternVLChatModel), the reference of that layout.

Why the two compute the same: transformers' InternVL is the port of that remote code,
and its conversion script is a renaming (kept here in the reverse direction):
class_embedding / patch_embedding / position_embedding are the -hf cls_token /
patch_embeddings.projection / position_embeddings; each layer's fused ``attn.qkv`` is q, k,
v stacked by rows, ``attn.proj`` the projection_layer, ls1 / ls2 the lambdas, norm1 /
norm2 the layernorms before / after; ``mlp1.{0,1,3}`` is the projector's LayerNorm, first
and second linear (mlp1.2 is the parameterless GELU).  select_layer -1 with no final
norm is the -hf vision_feature_layer -1 with use_mean_pooling; ps_version v2 is the -hf
pixel shuffle; the image side (448-px tiles + thumbnail, bicubic, ImageNet statistics) is
the GotOcr2 processor with the same settings.  A Llama text model can be rewritten as
InternLM2 on the way (convert.llama_to_internlm2), as InternVL 1.5 / 2 / 2.5 ship it.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile

import torch

from .convert import llama_to_internlm2

VISION = [("vision_tower.embeddings.cls_token", "vision_model.embeddings.class_embedding"),
          ("vision_tower.embeddings.patch_embeddings.projection.", "vision_model.embeddings.patch_embedding."),
          ("vision_tower.embeddings.position_embeddings", "vision_model.embeddings.position_embedding"),
          ("multi_modal_projector.layer_norm.", "mlp1.0."), ("multi_modal_projector.linear_1.", "mlp1.1."),
          ("multi_modal_projector.linear_2.", "mlp1.3.")]
LAYER = [(".attention.projection_layer.", ".attn.proj."), (".lambda_1", ".ls1"), (".lambda_2", ".ls2"),
         (".layernorm_before.", ".norm1."), (".layernorm_after.", ".norm2."), (".attention.q_norm.", ".attn.q_norm."),
         (".attention.k_norm.", ".attn.k_norm.")]


def _load(src: str) -> tuple[dict, dict]:
    from safetensors.torch import load_file

    with open(os.path.join(src, "config.json")) as f:
        cfg = json.load(f)
    return cfg, load_file(os.path.join(src, "model.safetensors"))


def _vision_name(n: str) -> str:
    for a, b in VISION:
        if n.startswith(a):
            return b + n[len(a):]
    n = n.replace("vision_tower.encoder.layer.", "vision_model.encoder.layers.")
    for a, b in LAYER:
        n = n.replace(a, b)
    return n


def _text_as_internlm2(text_cfg: dict, text_w: dict) -> tuple[dict, dict]:
    from safetensors.torch import load_file, save_file

    with tempfile.TemporaryDirectory() as tmp:
        src, dst = os.path.join(tmp, "llama"), os.path.join(tmp, "internlm2")
        os.makedirs(src)
        with open(os.path.join(src, "config.json"), "w") as f:
            json.dump({**text_cfg, "architectures": ["LlamaForCausalLM"]}, f)
        save_file({k: v.contiguous() for k, v in text_w.items()}, os.path.join(src, "model.safetensors"))
        llama_to_internlm2(src, dst)
        with open(os.path.join(dst, "config.json")) as f:
            return json.load(f), load_file(os.path.join(dst, "model.safetensors"))


def internvl_hf_to_chat(src: str, dst: str, internlm2: bool = False) -> str:
    from safetensors.torch import save_file

    cfg, w = _load(src)
    vc, tc = cfg["vision_config"], dict(cfg["text_config"])
    out, text = {}, {}
    qkv: dict[str, dict] = {}
    for name, t in w.items():
        if name.startswith("language_model."):
            text[name[len("language_model."):]] = t
            continue
        if ".attention.q_proj." in name or ".attention.k_proj." in name or ".attention.v_proj." in name:
            base, proj, kind = name.rsplit(".", 2)
            qkv.setdefault(f"{_vision_name(base)}.qkv.{kind}".replace(".attention.qkv", ".attn.qkv"), {})[proj] = t
            continue
        out[_vision_name(name)] = t
    for name, parts in qkv.items():
        out[name] = torch.cat([parts["q_proj"], parts["k_proj"], parts["v_proj"]], dim=0)
    if internlm2:
        tc, text = _text_as_internlm2(tc, text)
    else:
        tc["architectures"] = [{"qwen2": "Qwen2ForCausalLM", "llama": "LlamaForCausalLM"}[tc["model_type"]]]
    out.update({f"language_model.{k}": v for k, v in text.items()})
    with open(os.path.join(src, "processor_config.json")) as f:
        ip = json.load(f)["image_processor"]
    size = vc["image_size"] if isinstance(vc["image_size"], int) else vc["image_size"][0]
    chat = {"architectures": ["InternVLChatModel"], "model_type": "internvl_chat",
            "downsample_ratio": cfg.get("downsample_ratio", 0.5), "select_layer": cfg.get("vision_feature_layer", -1),
            "ps_version": "v2", "force_image_size": size, "dynamic_image_size": bool(ip.get("crop_to_patches")),
            "min_dynamic_patch": ip.get("min_patches", 1), "max_dynamic_patch": ip.get("max_patches", 12),
            "use_thumbnail": True, "tie_word_embeddings": cfg.get("tie_word_embeddings", False),
            "vision_config": {"architectures": ["InternVisionModel"], "hidden_size": vc["hidden_size"],
                              "num_hidden_layers": vc["num_hidden_layers"],
                              "num_attention_heads": vc["num_attention_heads"],
                              "intermediate_size": vc["intermediate_size"], "image_size": size,
                              "patch_size": vc["patch_size"] if isinstance(vc["patch_size"], int) else vc["patch_size"][0],
                              "qkv_bias": vc.get("attention_bias", True), "qk_normalization": vc.get("use_qk_norm", False),
                              "norm_type": vc.get("norm_type", "layer_norm"), "layer_norm_eps": vc.get("layer_norm_eps", 1e-6),
                              "hidden_act": vc.get("hidden_act", "gelu")},
            "llm_config": tc}
    os.makedirs(dst, exist_ok=True)
    for f in os.listdir(src):   # the tokenizer, not the processor: the remote code has its own image path
        if f.startswith(("tokenizer", "special_tokens", "chat_template", "vocab", "merges")):
            shutil.copy(os.path.join(src, f), dst)
    with open(os.path.join(dst, "config.json"), "w") as f:
        json.dump(chat, f, indent=1)
    save_file({k: v.contiguous() for k, v in out.items()}, os.path.join(dst, "model.safetensors"))
    return dst
