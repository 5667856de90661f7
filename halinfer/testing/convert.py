"""Converting a transformers checkpoint into the layout of a remote-code family.

Families whose modeling code lives only on the hub (InternLM2, InternLM3, ...)
cannot be instantiated here, so their tests take a transformers model whose
computation is the same, rewrite its checkpoint into the family's names and
layout, and require identical outputs.  Each converter states what the
equivalence rests on.
"""
from __future__ import annotations

import json
import os
import shutil

import torch
from safetensors.torch import load_file, save_file


def _copy_side_files(src: str, dst: str) -> None:
    os.makedirs(dst, exist_ok=True)
    for name in os.listdir(src):
        if name.endswith(".safetensors") or name == "config.json":
            continue
        shutil.copy(os.path.join(src, name), os.path.join(dst, name))


def _load(src):
    with open(os.path.join(src, "config.json")) as f:
        cfg = json.load(f)
    return cfg, load_file(os.path.join(src, "model.safetensors"))


def _save(dst, cfg, tensors):
    with open(os.path.join(dst, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    save_file({k: v.contiguous() for k, v in tensors.items()}, os.path.join(dst, "model.safetensors"))


def llama_to_internlm2(src: str, dst: str) -> str:
    """InternLM2 = Llama (RMSNorm, rotary, SwiGLU, GQA) with renamed modules and q/k/v
    packed per KV head into ``wqkv`` (InternLM2's modeling_internlm2.py splits it the
    same way: rows grouped [q_per_kv query heads, key, value] per KV head)."""
    cfg, w = _load(src)
    H, Hk = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    D = cfg.get("head_dim") or cfg["hidden_size"] // H
    assert D == cfg["hidden_size"] // H, "InternLM2 derives head_dim from hidden_size"
    g = H // Hk
    out = {}
    for name, t in w.items():
        if ".self_attn.q_proj." in name:
            base = name.split(".self_attn.")[0]
            q = t.view(Hk, g, D, -1)
            k = w[name.replace("q_proj", "k_proj")].view(Hk, 1, D, -1)
            v = w[name.replace("q_proj", "v_proj")].view(Hk, 1, D, -1)
            out[f"{base}.attention.wqkv.weight"] = torch.cat([q, k, v], dim=1).reshape(-1, q.shape[-1])
            continue
        if ".self_attn.k_proj." in name or ".self_attn.v_proj." in name:
            continue
        n = (name.replace("model.embed_tokens.", "model.tok_embeddings.")
             .replace(".self_attn.o_proj.", ".attention.wo.")
             .replace(".input_layernorm.", ".attention_norm.")
             .replace(".post_attention_layernorm.", ".ffn_norm.")
             .replace(".mlp.gate_proj.", ".feed_forward.w1.")
             .replace(".mlp.up_proj.", ".feed_forward.w3.")
             .replace(".mlp.down_proj.", ".feed_forward.w2."))
        if n == "lm_head.weight":
            n = "output.weight"
        out[n] = t
    new_cfg = {k: v for k, v in cfg.items() if k not in ("head_dim", "attention_bias", "mlp_bias", "model_type")}
    new_cfg.update(architectures=["InternLM2ForCausalLM"], model_type="internlm2", bias=False,
                   auto_map={"AutoModelForCausalLM": "modeling_internlm2.InternLM2ForCausalLM"})
    _copy_side_files(src, dst)
    _save(dst, new_cfg, out)
    return dst


def llama_to_internlm3(src: str, dst: str) -> str:
    """InternLM3 = Llama with the q/k/v bias switch named ``qkv_bias`` and the o_proj
    bias switch named ``bias`` (same module names as Llama)."""
    cfg, w = _load(src)
    new_cfg = dict(cfg)
    new_cfg.update(architectures=["InternLM3ForCausalLM"], model_type="internlm3",
                   qkv_bias=bool(cfg.get("attention_bias")), bias=bool(cfg.get("attention_bias")))
    new_cfg.pop("attention_bias", None)
    _copy_side_files(src, dst)
    _save(dst, new_cfg, w)
    return dst
