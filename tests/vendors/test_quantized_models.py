"""Quantized checkpoints on the emulated Atlas A2 in the modes the seed lists (W4A16 eager,
W8A8 graph): the same checkpoint through the CPU backend (the core's reference
operators) is the reference, since transformers cannot load these formats without
vendor packages."""
from __future__ import annotations

import pytest
import torch

from halinfer import LLM
from halinfer.testing.hf_compare import halinfer_greedy, mean_rel_err, random_prompts
from halinfer.testing.tiny import save_tiny_model

from .conftest import make_ascend
from .quantized_ckpt import quantize
from .support_records import note
from .test_models_emulated import registered


@pytest.fixture(scope="module")
def quantized(tmp_path_factory):
    src = save_tiny_model("llama", str(tmp_path_factory.mktemp("llama-d128")), seed=5, hidden_size=256,
                          num_attention_heads=2, num_key_value_heads=1, intermediate_size=192, dtype=torch.float16)
    return {m: quantize(src, str(tmp_path_factory.mktemp("q") / m), m) for m in ("awq", "w8a8")}


# Mean logit error relative to the spread, prompt / decode steps.  W8A8 quantizes activations per
# token, so a last-bit difference upstream (the vendor norm rounds once, the reference twice) can
# move an activation across an int8 step: a looser bound than for W4A16's exact dequantization.
TOL = {"awq": (5e-3, 1e-2), "w8a8": (2e-2, 3e-2)}


@pytest.mark.parametrize("method, mode", [("awq", "eager"), ("w8a8", "graph")])
def test_ascend_a2_quantized_matches_the_reference_operators(npu_emulation, quantized, method, mode):
    kw = dict(dtype=torch.float16, num_kv_blocks=24, max_num_seqs=4, max_model_len=256)
    cpu = LLM(quantized[method], device="cpu", block_size=16, **kw)
    prompts = random_prompts(11, cpu.engine.vocab_size, lengths=(21, 5, 13))
    want = halinfer_greedy(cpu, prompts, 8)
    backend = make_ascend(npu_emulation, soc="A2")
    with registered(backend):
        llm = LLM(quantized[method], device="ascend", enforce_eager=(mode == "eager"), **kw)
        assert llm.engine.graphs == (mode == "graph")
        for p in prompts:
            err = mean_rel_err(llm.engine.prompt_logits(p).cpu(), cpu.engine.prompt_logits(p).cpu())
            assert err < TOL[method][0], f"prompt of {len(p)} tokens: {err:.2e}"
        got = halinfer_greedy(llm, prompts, 8)
    for (tokens, logits), (ref_tokens, ref_logits) in zip(got, want):
        for i, (a, b) in enumerate(zip(logits, ref_logits)):
            err = mean_rel_err(a.cpu(), b.cpu())
            assert err < TOL[method][1], f"step {i}: {err:.2e}"
            if tokens[i] != ref_tokens[i]:
                break      # a near-tie: past it the continuations differ
    note(backend, "llama-d128", mode, "float16", column=f"{'W4A16' if method == 'awq' else 'W8A8'}({mode})")
