"""What the HF-equivalence cases cannot see: the MLA cache's size, the expert loader's
completeness check, and Phi-3.5-MoE's router against transformers' own function."""
from __future__ import annotations

import json
import os
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from halinfer import LLM
from halinfer.models.layers import KVSpec


def test_mla_cache_holds_one_latent_head_per_token_and_no_values(case_dirs):
    model_dir, _ = case_dirs("deepseek-v2")
    with open(os.path.join(model_dir, "config.json")) as f:
        cfg = json.load(f)
    latent, rope = cfg["kv_lora_rank"], cfg["qk_rope_head_dim"]
    llm = LLM(model_dir, device="cpu", dtype="float32", num_kv_blocks=16, block_size=8, max_model_len=64)
    specs = llm.engine.model.kv_cache_spec()
    assert specs == [KVSpec(1, latent + rope, None)] * cfg["num_hidden_layers"]
    for kv in llm.engine.runner.caches:
        assert kv.v is None and tuple(kv.k.shape) == (16, 8, 1, latent + rope)


def test_a_checkpoint_missing_one_expert_is_refused(case_dirs, tmp_path):
    model_dir, _ = case_dirs("mixtral")
    dst = tmp_path / "one-expert-short"
    shutil.copytree(model_dir, dst)
    w = load_file(str(dst / "model.safetensors"))
    gone = "model.layers.1.block_sparse_moe.experts.5.w3.weight"
    del w[gone]
    save_file(w, str(dst / "model.safetensors"))
    with pytest.raises(ValueError, match=r"model\.layers\.1\.mlp\.experts\.w13"):
        LLM(str(dst), device="cpu", dtype="float32", num_kv_blocks=16, block_size=8, max_model_len=64)


@pytest.mark.parametrize("eps", [0.01, 0.1, 0.5])
def test_sparsemixer_routing_matches_transformers(eps):
    from transformers.models.phimoe.modeling_phimoe import sparsemixer

    from halinfer.models.phimoe import sparsemixer_top2

    g = torch.Generator().manual_seed(7)
    logits = torch.randn(200, 16, generator=g) * 2
    want_w, want_ids = sparsemixer(logits, jitter_eps=eps, training=False, top_k=2)
    got_w, got_ids = sparsemixer_top2(logits, eps)
    assert torch.equal(got_ids.long(), want_ids)
    torch.testing.assert_close(got_w, want_w, atol=1e-7, rtol=1e-6)
