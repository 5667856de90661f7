"""Quantized checkpoints as published load and run on the CPU backend like the dense model
they stand for: transformers on the dequantized twin (written by an independent packer,
halinfer/testing/quant_ckpt.py), with activations fake-quantized where the format
quantizes them."""
from __future__ import annotations

import pytest
import torch

from halinfer import LLM
from halinfer.testing.hf_compare import (assert_matches_transformers, halinfer_greedy, hf_greedy, hf_model,
                                         max_rel_err, random_prompts)
from halinfer.testing.quant_ckpt import fake_quant_activations, quantize
from halinfer.testing.tiny import save_tiny_model

SHAPE = dict(hidden_size=128, intermediate_size=192, num_attention_heads=4, num_key_value_heads=2,
             num_hidden_layers=2)

WEIGHT_ONLY = {
    "awq-g32-one-module-dense": ("awq", dict(group=32, dense_modules=("layers.0.mlp.down_proj",))),
    "gptq-4bit-g32-v1": ("gptq", dict(group=32)),
    "gptq-4bit-g64-act-order-sym-v2": ("gptq", dict(group=64, desc_act=True, sym=True, v2=True)),
    "gptq-8bit-per-channel-v1": ("gptq", dict(group=-1, bits=8)),
    "gptq-8bit-g32-act-order-v2": ("gptq", dict(group=32, bits=8, desc_act=True, v2=True)),
    # compressed-tensors pack-quantized (llm-compressor W4A16 / W8A16), loaded as GPTQ
    "pack-4bit-g32-sym": ("pack", dict(group=32)),
    "pack-4bit-g64-asym-actorder": ("pack", dict(group=64, sym=False, actorder="group")),
    "pack-8bit-per-channel-asym": ("pack", dict(group=-1, bits=8, sym=False)),
}
SPEC_METHOD = {"pack": "gptq"}   # the spec method a test format loads as
ACT_QUANT = {
    "w8a8-compressed-tensors-bf16-scales": ("w8a8", dict(scale_dtype=torch.bfloat16), None, None),
    "w8a8-lmdeploy-smooth-quant-bin": ("w8a8-lmdeploy", {}, None, None),
    "fp8-block-128": ("fp8", dict(block=(128, 128)), 128, None),
    "fp8-block-32x64": ("fp8", dict(block=(32, 64)), 64, None),
    "fp8-ct-channel-dynamic": ("fp8-ct", dict(strategy="channel"), None, None),
    "fp8-ct-tensor-static": ("fp8-ct", dict(strategy="tensor", input_scale=0.02), None, 0.02),
}


@pytest.fixture(scope="module")
def dense(tmp_path_factory):
    return save_tiny_model("llama", str(tmp_path_factory.mktemp("llama-q")), seed=3, **SHAPE)


def _model(llm):
    return llm.engine.core.executor.worker.model


def _build(dense, tmp_path, method, opts):
    return quantize(dense, str(tmp_path / "q"), method, **opts)


@pytest.mark.parametrize("name", list(WEIGHT_ONLY))
def test_weight_only_checkpoint_matches_its_dequantized_twin(dense, tmp_path, name):
    method, opts = WEIGHT_ONLY[name]
    qdir, ddir = _build(dense, tmp_path, method, opts)
    llm = LLM(qdir, device="cpu", dtype=torch.float32, num_kv_blocks=64, block_size=8)
    assert _model(llm).ctx.quant["method"] == SPEC_METHOD.get(method, method)
    hf = hf_model(ddir)
    assert_matches_transformers(llm, hf, random_prompts(1, llm.engine.vocab_size, (11, 4)), n_tokens=8, tol=1e-4)


@pytest.mark.parametrize("name", list(ACT_QUANT))
def test_activation_quantized_checkpoint_matches_fake_quantized_transformers(dense, tmp_path, name):
    method, opts, block_k, input_scale = ACT_QUANT[name]
    qdir, ddir = _build(dense, tmp_path, method, opts)
    llm = LLM(qdir, device="cpu", dtype=torch.float32, num_kv_blocks=64, block_size=8)
    assert _model(llm).ctx.quant["method"] == ("fp8" if method.startswith("fp8") else method.split("-")[0])
    hf = fake_quant_activations(hf_model(ddir), "fp8" if method.startswith("fp8") else "w8a8", block_k, input_scale)
    _assert_matches_fake_quant(llm, hf, hf_model(ddir))


def _assert_matches_fake_quant(llm, hf, plain):
    """Prompt logits and greedy tokens as transformers with the format's activation rounding."""
    for p in random_prompts(2, llm.engine.vocab_size, (11, 4)):
        ref = hf_greedy(hf, p, 6)
        mine = llm.engine.prompt_logits(p)
        # Activation rounding may flip where the two compute a value a last bit apart; the
        # error must stay far below what skipping activation quantization costs.
        err, off = max_rel_err(mine, ref.prompt_logits), max_rel_err(plain(torch.tensor([p])).logits[0], ref.prompt_logits)
        assert err < 2e-3 and err < off / 4, f"{len(p)} tokens: {err:.2e} (without act quant: {off:.2e})"
        (tokens, _), = halinfer_greedy(llm, [p], 6)
        assert tokens == ref.tokens


def test_dense_modules_in_a_quantized_checkpoint_load_dense(dense, tmp_path):
    qdir, _ = _build(dense, tmp_path, "gptq", dict(group=32, dense_modules=("self_attn",)))
    llm = LLM(qdir, device="cpu", dtype=torch.float32, num_kv_blocks=64, block_size=8)
    layer = _model(llm).model.layers[0]
    assert layer.self_attn.qkv_proj.method is None and layer.self_attn.qkv_proj.weight.dtype == torch.float32
    assert layer.mlp.gate_up_proj.method == "gptq"


def test_dummy_weights_keep_block_fp8_scales_block_constant(dense, tmp_path):
    """Benchmarks run random weights (load_format="dummy"): block FP8 scales must still repeat
    over each block's rows as a loaded checkpoint's do, or the CUDA backend's block-scaled
    cuBLASLt path (which needs that) is never what a benchmark measures."""
    import json
    import shutil

    d = tmp_path / "fp8-dummy"
    shutil.copytree(dense, d)
    cfg = json.loads((d / "config.json").read_text())
    cfg["quantization_config"] = {"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic",
                                  "weight_block_size": [32, 32]}
    (d / "config.json").write_text(json.dumps(cfg))
    llm = LLM(str(d), device="cpu", dtype=torch.float32, num_kv_blocks=64, block_size=8, load_format="dummy")
    scales = [(n, p) for n, p in _model(llm).named_parameters() if n.endswith("weight_scale_inv")]
    assert scales, "no block-FP8 layer was built"
    for n, s in scales:
        blocks = s[::32]
        assert torch.equal(blocks.repeat_interleave(32, dim=0)[: s.shape[0]], s), n
        assert bool((s > 0).all()) and len(torch.unique(blocks)) > 1, n


MOE_FORMATS = {
    "qwen3-moe-fp8-block-32": ("qwen3-moe", "fp8", dict(block=(32, 32)), ("fp8", 32)),
    "qwen3-moe-fp8-ct-channel": ("qwen3-moe", "fp8-ct", dict(strategy="channel"), ("fp8", None)),
    "mixtral-fp8-block-32": ("mixtral", "fp8", dict(block=(32, 32)), ("fp8", 32)),
    "deepseek-v2-lite-fp8-block-32": ("deepseek-v2-lite", "fp8", dict(block=(32, 32)), ("fp8", 32)),
    "qwen3-moe-awq-g32": ("qwen3-moe", "awq", dict(group=32), None),
    "mixtral-gptq-g32-act-order-v1": ("mixtral", "gptq", dict(group=32, desc_act=True), None),
    "qwen3-moe-gptq-8bit-v2": ("qwen3-moe", "gptq", dict(group=32, bits=8, v2=True), None),
    "deepseek-v2-lite-w8a8": ("deepseek-v2-lite", "w8a8", {}, ("w8a8", None)),
    "qwen3-moe-pack-4bit-sym": ("qwen3-moe", "pack", dict(group=32), None),
    "mixtral-pack-4bit-asym-actorder": ("mixtral", "pack", dict(group=32, sym=False, actorder="group"), None),
    "qwen3-moe-pack-8bit-per-channel": ("qwen3-moe", "pack", dict(group=-1, bits=8, sym=False), None),
}


@pytest.mark.parametrize("name", list(MOE_FORMATS))
def test_quantized_moe_checkpoint_dequantizes_its_experts(tmp_path, name):
    """Quantized MoE checkpoints as published (per-expert matrices in the format's tensors:
    FP8 as DeepSeek-V3 and Qwen3-MoE FP8 ship them, AWQ, GPTQ, W8A8): experts are dequantized at
    load and run unquantized, every other projection runs quantized.  Against transformers on
    the dequantized twin, with the non-expert projections' inputs fake-quantized where the
    format quantizes them (its experts are fused parameters, not hooked)."""
    family, method, opts, act = MOE_FORMATS[name]
    src = save_tiny_model(family, str(tmp_path / "moe"), seed=4)
    qdir, ddir = quantize(src, str(tmp_path / "q"), method, **opts)
    llm = LLM(qdir, device="cpu", dtype=torch.float32, num_kv_blocks=64, block_size=8)
    stacks = [m for m in _model(llm).modules() if hasattr(m, "_pending")]
    assert stacks and all(m.w13.dtype == torch.float32 and not m._pending for m in stacks)
    spec = SPEC_METHOD.get(method, method.split("-")[0])
    assert any(getattr(m, "method", None) == spec for m in _model(llm).modules()), f"no {spec} projection left"
    if act is None:   # weight-only: the same float32 computation as the twin
        assert_matches_transformers(llm, hf_model(ddir), random_prompts(1, llm.engine.vocab_size, (11, 4)),
                                    n_tokens=8, tol=1e-4)
    else:
        _assert_matches_fake_quant(llm, fake_quant_activations(hf_model(ddir), *act), hf_model(ddir))


def test_static_scale_fp8_moe_experts_are_refused_by_name(tmp_path):
    src = save_tiny_model("qwen3-moe", str(tmp_path / "moe"), seed=4)
    qdir, _ = quantize(src, str(tmp_path / "q"), "fp8-ct", strategy="tensor", input_scale=0.02)
    with pytest.raises(NotImplementedError, match="fp8 with a static input scale quantized MoE experts are not"):
        LLM(qdir, device="cpu", dtype=torch.float32, num_kv_blocks=64, block_size=8)
