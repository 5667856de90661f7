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


def _rope_theta(cfg: dict) -> float:
    rp = cfg.get("rope_parameters") or {}
    assert (rp.get("rope_type") or "default") == "default" and not cfg.get("rope_scaling"), "plain rotary expected"
    return float(rp.get("rope_theta") or cfg.get("rope_theta") or 10000.0)


def _head_dim(cfg: dict) -> int:
    return cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]


class _Tensors:
    """The source checkpoint's tensors; ``done`` asserts that every one was written out."""

    def __init__(self, w: dict):
        self.w, self.used = w, set()

    def __getitem__(self, name):
        self.used.add(name)
        return self.w[name]

    def cat(self, *names):
        return torch.cat([self[n] for n in names], dim=0)

    def done(self):
        left = set(self.w) - self.used
        assert not left, f"converter left tensors behind: {sorted(left)[:5]}"


def _remote_config(cfg: dict, arch: str, model_type: str, module: str, **fields) -> dict:
    keep = {k: cfg[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id", "dtype", "torch_dtype") if k in cfg}
    return {**keep, "architectures": [arch], "model_type": model_type,
            "auto_map": {"AutoModelForCausalLM": f"{module}.{arch}"}, **fields}


def glm_to_chatglm(src: str, dst: str) -> str:
    """ChatGLM2 / ChatGLM3 / GLM-4 / CodeGeeX4 as their remote code (modeling_chatglm.py)
    lays them out, from transformers' GlmForCausalLM.  Equivalence rests on: both are
    pre-norm RMSNorm decoders with q/k/v biases and no o bias; ChatGLM's query_key_value
    rows are [q | k | v] (multi_query_group_num KV heads), its dense_h_to_4h rows
    [gate | up] with silu(gate) * up, exactly Glm's gate_up_proj; both rotate the first half
    of each head in interleaved pairs with inverse frequencies base^(-2i/(D/2)), ChatGLM's
    base being 10000 * rope_ratio; both scale scores by 1/sqrt(D); output_layer is untied."""
    cfg, w = _load(src)
    w = _Tensors(w)
    rp = cfg.get("rope_parameters") or {}
    assert rp.get("partial_rotary_factor", cfg.get("partial_rotary_factor", 0.5)) == 0.5
    assert cfg.get("attention_bias", True) and not cfg.get("tie_word_embeddings")
    H, D = cfg["num_attention_heads"], _head_dim(cfg)
    out = {}
    for i in range(cfg["num_hidden_layers"]):
        s, d = f"model.layers.{i}.", f"transformer.encoder.layers.{i}."
        out[d + "input_layernorm.weight"] = w[s + "input_layernorm.weight"]
        for p in ("weight", "bias"):
            out[d + f"self_attention.query_key_value.{p}"] = w.cat(
                *(s + f"self_attn.{x}_proj.{p}" for x in "qkv"))
        out[d + "self_attention.dense.weight"] = w[s + "self_attn.o_proj.weight"]
        out[d + "post_attention_layernorm.weight"] = w[s + "post_attention_layernorm.weight"]
        out[d + "mlp.dense_h_to_4h.weight"] = w[s + "mlp.gate_up_proj.weight"]      # already [gate | up]
        out[d + "mlp.dense_4h_to_h.weight"] = w[s + "mlp.down_proj.weight"]
    out["transformer.embedding.word_embeddings.weight"] = w["model.embed_tokens.weight"]
    out["transformer.encoder.final_layernorm.weight"] = w["model.norm.weight"]
    out["transformer.output_layer.weight"] = w["lm_head.weight"]
    n = D // 2   # the buffer ChatGLM checkpoints carry (the loader must skip it)
    out["transformer.rotary_pos_emb.inv_freq"] = 1.0 / (10000 ** (torch.arange(0, n, 2).float() / n))
    w.done()
    ratio = _rope_theta(cfg) / 10000.0
    new_cfg = _remote_config(
        cfg, "ChatGLMModel", "chatglm", "modeling_chatglm", add_bias_linear=False, add_qkv_bias=True,
        apply_query_key_layer_scaling=True, apply_residual_connection_post_layernorm=False,
        attention_softmax_in_fp32=True, ffn_hidden_size=cfg["intermediate_size"], hidden_size=cfg["hidden_size"],
        kv_channels=D, layernorm_epsilon=cfg["rms_norm_eps"], multi_query_attention=True,
        multi_query_group_num=cfg["num_key_value_heads"], num_attention_heads=H, num_layers=cfg["num_hidden_layers"],
        original_rope=True, padded_vocab_size=cfg["vocab_size"], post_layer_norm=True, rmsnorm=True,
        seq_length=cfg["max_position_embeddings"], tie_word_embeddings=False)
    if ratio != 1.0:
        new_cfg["rope_ratio"] = ratio
    _copy_side_files(src, dst)
    _save(dst, new_cfg, out)
    return dst


def qwen2_to_qwen(src: str, dst: str) -> str:
    """Qwen (v1, QWenLMHeadModel, modeling_qwen.py) from transformers' Qwen2 with as many KV
    heads as heads.  Equivalence rests on: both are pre-norm RMSNorm decoders with q/k/v
    biases, no o bias, neox-style rotary on the whole head and an untied head; Qwen's c_attn
    rows are [q | k | v], its MLP computes c_proj(w1(x) * silu(w2(x))) with w1, w2 of width
    intermediate_size / 2, so w2 is Qwen2's gate_proj and w1 its up_proj.  Qwen's dynamic
    NTK and logn scaling act only past seq_length, which the test sequences never reach."""
    cfg, w = _load(src)
    w = _Tensors(w)
    H = cfg["num_attention_heads"]
    assert cfg["num_key_value_heads"] == H and _head_dim(cfg) * H == cfg["hidden_size"], "Qwen (v1) is MHA"
    assert not cfg.get("tie_word_embeddings") and not cfg.get("use_sliding_window")
    out = {}
    for i in range(cfg["num_hidden_layers"]):
        s, d = f"model.layers.{i}.", f"transformer.h.{i}."
        out[d + "ln_1.weight"] = w[s + "input_layernorm.weight"]
        for p in ("weight", "bias"):
            out[d + f"attn.c_attn.{p}"] = w.cat(*(s + f"self_attn.{x}_proj.{p}" for x in "qkv"))
        out[d + "attn.c_proj.weight"] = w[s + "self_attn.o_proj.weight"]
        out[d + "ln_2.weight"] = w[s + "post_attention_layernorm.weight"]
        out[d + "mlp.w1.weight"] = w[s + "mlp.up_proj.weight"]
        out[d + "mlp.w2.weight"] = w[s + "mlp.gate_proj.weight"]
        out[d + "mlp.c_proj.weight"] = w[s + "mlp.down_proj.weight"]
    out["transformer.wte.weight"] = w["model.embed_tokens.weight"]
    out["transformer.ln_f.weight"] = w["model.norm.weight"]
    out["lm_head.weight"] = w["lm_head.weight"]
    w.done()
    new_cfg = _remote_config(
        cfg, "QWenLMHeadModel", "qwen", "modeling_qwen", hidden_size=cfg["hidden_size"], num_attention_heads=H,
        num_hidden_layers=cfg["num_hidden_layers"], intermediate_size=2 * cfg["intermediate_size"],
        kv_channels=_head_dim(cfg), layer_norm_epsilon=cfg["rms_norm_eps"], rotary_emb_base=_rope_theta(cfg),
        rotary_pct=1.0, seq_length=cfg["max_position_embeddings"],
        max_position_embeddings=cfg["max_position_embeddings"], vocab_size=cfg["vocab_size"], no_bias=True,
        scale_attn_weights=True, use_dynamic_ntk=True, use_logn_attn=True, tie_word_embeddings=False)
    _copy_side_files(src, dst)
    _save(dst, new_cfg, out)
    return dst


def _llama_to_baichuan(src: str, dst: str, arch: str, baichuan2: bool, alibi: bool) -> str:
    """Baichuan (modeling_baichuan.py) from a transformers Llama with as many KV heads as
    heads and no biases.  Equivalence rests on: Baichuan is the Llama computation with
    q|k|v packed into W_pack (rows [q | k | v]); its 7B models use rotary with base 10000,
    its 13B models no rotary but ALiBi (the reference then is Llama with ALiBi, see
    alibi_reference.py); Baichuan 2's NormHead divides every lm_head row by its L2 norm
    before use.  The reference's rows are unit length (its recipe normalises them), so
    this converter stores them rescaled by random positive factors, as a real
    checkpoint's un-normalised rows: only a loader that normalises them gets them back."""
    cfg, w = _load(src)
    w = _Tensors(w)
    H = cfg["num_attention_heads"]
    assert cfg["num_key_value_heads"] == H and _head_dim(cfg) * H == cfg["hidden_size"], "Baichuan is MHA"
    assert not cfg.get("attention_bias") and not cfg.get("mlp_bias") and not cfg.get("tie_word_embeddings")
    assert alibi or _rope_theta(cfg) == 10000.0, "Baichuan's rotary base is fixed at 10000"
    out = {}
    for i in range(cfg["num_hidden_layers"]):
        s = f"model.layers.{i}."
        out[s + "self_attn.W_pack.weight"] = w.cat(*(s + f"self_attn.{x}_proj.weight" for x in "qkv"))
        for n in ("self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj", "input_layernorm",
                  "post_attention_layernorm"):
            out[s + n + ".weight"] = w[s + n + ".weight"]
    out["model.embed_tokens.weight"] = w["model.embed_tokens.weight"]
    out["model.norm.weight"] = w["model.norm.weight"]
    head = w["lm_head.weight"]
    if baichuan2:
        norms = head.float().norm(dim=1)
        assert torch.allclose(norms, torch.ones_like(norms), atol=1e-5), "the reference needs unit lm_head rows"
        g = torch.Generator().manual_seed(0)
        head = head * (0.5 + 2.0 * torch.rand(head.shape[0], 1, generator=g)).to(head.dtype)
    out["lm_head.weight"] = head
    w.done()
    fields = dict(hidden_size=cfg["hidden_size"], intermediate_size=cfg["intermediate_size"], num_attention_heads=H,
                  num_hidden_layers=cfg["num_hidden_layers"], model_max_length=cfg["max_position_embeddings"],
                  rms_norm_eps=cfg["rms_norm_eps"], vocab_size=cfg["vocab_size"], hidden_act="silu",
                  tie_word_embeddings=False)
    if not alibi:          # the 7B configs carry a position table size; the 13B (ALiBi) ones do not
        fields["max_position_embeddings"] = cfg["max_position_embeddings"]
    if baichuan2:          # a Baichuan 2 config field (Baichuan 1 configs lack it)
        fields["z_loss_weight"] = 0
    new_cfg = _remote_config(cfg, arch, "baichuan", "modeling_baichuan", **fields)
    _copy_side_files(src, dst)
    marker = os.path.join(dst, "halinfer_reference.json")   # the reference's marker is not the model's
    if os.path.exists(marker):
        os.remove(marker)
    _save(dst, new_cfg, out)
    return dst


def llama_to_baichuan_7b(src: str, dst: str) -> str:
    return _llama_to_baichuan(src, dst, "BaiChuanForCausalLM", baichuan2=False, alibi=False)


def llama_to_baichuan2_7b(src: str, dst: str) -> str:
    return _llama_to_baichuan(src, dst, "BaichuanForCausalLM", baichuan2=True, alibi=False)


def llama_to_baichuan2_13b(src: str, dst: str) -> str:
    return _llama_to_baichuan(src, dst, "BaichuanForCausalLM", baichuan2=True, alibi=True)


def llama_to_internlm(src: str, dst: str) -> str:
    """InternLM (v1, InternLMForCausalLM, modeling_internlm.py) from a transformers Llama with
    as many KV heads as heads and q/k/v/o biases.  Equivalence rests on: InternLM is Llama
    under Llama's module names with ``bias`` switching the q/k/v/o biases, no MLP bias, and
    its rotary base in ``rotary.base``; its "dynamic" rotary type changes nothing within
    max_position_embeddings, the context halinfer serves it with."""
    cfg, w = _load(src)
    H = cfg["num_attention_heads"]
    assert cfg["num_key_value_heads"] == H and _head_dim(cfg) * H == cfg["hidden_size"], "InternLM is MHA"
    assert cfg.get("attention_bias") and not cfg.get("mlp_bias")
    new_cfg = _remote_config(
        cfg, "InternLMForCausalLM", "internlm", "modeling_internlm", hidden_size=cfg["hidden_size"],
        intermediate_size=cfg["intermediate_size"], num_attention_heads=H, num_hidden_layers=cfg["num_hidden_layers"],
        max_position_embeddings=cfg["max_position_embeddings"], rms_norm_eps=cfg["rms_norm_eps"],
        vocab_size=cfg["vocab_size"], hidden_act="silu", bias=True, tie_word_embeddings=False,
        rotary={"base": _rope_theta(cfg), "type": "dynamic"})
    _copy_side_files(src, dst)
    _save(dst, new_cfg, w)
    return dst


def llama_published_config(src: str, dst: str) -> str:
    """The same Llama checkpoint with its config in the layout published checkpoints use
    (transformers 4): rope_theta and rope_scaling at the top level, no rope_parameters."""
    cfg, w = _load(src)
    rp = dict(cfg.pop("rope_parameters", None) or {})
    cfg["rope_theta"] = rp.pop("rope_theta", 10000.0)
    rtype = rp.pop("rope_type", "default")
    cfg["rope_scaling"] = None if rtype == "default" else {"rope_type": rtype, **rp}
    _copy_side_files(src, dst)
    _save(dst, cfg, w)
    return dst


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


def qwen2_moe_to_deepseek_moe(src: str, dst: str) -> str:
    """DeepSeek-MoE (the hub's modeling_deepseek.py, DeepseekForCausalLM) = Llama attention
    without biases, a dense MLP in the first first_k_dense_replace layers, and elsewhere a
    MoE block: softmax over the routed experts, top-k, weights left unnormalised when
    norm_topk_prob is false, plus n_shared_experts always-on experts (one MLP of
    n_shared_experts * moe_intermediate_size) added in.  Qwen2-MoE computes exactly that
    with qkv_bias off, mlp_only_layers = those first layers and norm_topk_prob off, except
    that it multiplies the shared expert by sigmoid(x @ shared_expert_gate).  The reference
    recipe zeroes that gate, making the factor exactly 1/2, which this converter folds into
    the shared expert's down_proj (halving is exact in floating point)."""
    cfg, w = _load(src)
    assert not cfg.get("qkv_bias") and not cfg.get("norm_topk_prob") and cfg.get("decoder_sparse_step", 1) == 1
    dense = sorted(cfg.get("mlp_only_layers") or [])
    assert dense == list(range(len(dense))), "DeepSeek-MoE's dense layers are the first ones"
    inter, shared = cfg["moe_intermediate_size"], cfg["shared_expert_intermediate_size"]
    assert shared % inter == 0
    out = {}
    for name, t in w.items():
        if name.endswith(".shared_expert_gate.weight"):
            assert not t.any(), "the reference's shared-expert gate must be zero (see the recipe)"
            continue
        name = name.replace(".mlp.shared_expert.", ".mlp.shared_experts.")
        out[name] = t * 0.5 if ".mlp.shared_experts.down_proj." in name else t
    drop = ("num_experts", "shared_expert_intermediate_size", "mlp_only_layers", "decoder_sparse_step", "qkv_bias",
            "layer_types", "sliding_window", "use_sliding_window", "max_window_layers", "model_type")
    new_cfg = {k: v for k, v in cfg.items() if k not in drop}
    new_cfg.update(architectures=["DeepseekForCausalLM"], model_type="deepseek", n_routed_experts=cfg["num_experts"],
                   n_shared_experts=shared // inter, first_k_dense_replace=len(dense), moe_layer_freq=1,
                   norm_topk_prob=False, scoring_func="softmax", topk_method="greedy", attention_bias=False,
                   auto_map={"AutoModelForCausalLM": "modeling_deepseek.DeepseekForCausalLM"})
    _copy_side_files(src, dst)
    _save(dst, new_cfg, out)
    return dst
