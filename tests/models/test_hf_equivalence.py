"""Every family against HF transformers in float32, on the CPU backend.

For each: the logits at every prompt position, the logits of every decode step,
and 32 greedy tokens must match.  Families with no transformers implementation
(InternLM2, InternLM3) are converted from a transformers checkpoint with the same
computation (halinfer/testing/convert.py says why each is equivalent).
"""
from __future__ import annotations

import zlib

import numpy as np
import pytest

from halinfer import LLM
from halinfer.testing import convert
from halinfer.testing.hf_compare import halinfer_greedy, hf_greedy, hf_model, max_rel_err

N_TOKENS = 32
TOL = 1e-4

CASES = {
    # case id: (transformers family, overrides, converter or None)
    "llama": ("llama", {}, None),
    "llama3-rope": ("llama3", {}, None),
    "llama-linear-rope": ("llama-linear", {}, None),
    # max_position 40 < prompt + 32 tokens: decoding runs past the original context
    "llama-dynamic-rope": ("llama-dynamic", {"max_position_embeddings": 40}, None),
    "llama3.2-tied": ("llama-tied", {}, None),
    "llama-bias": ("llama-bias", {}, None),
    "mistral-sliding-window": ("mistral", {}, None),
    "qwen2-tied": ("qwen2", {}, None),
    "qwen2-sliding-window": ("qwen2-swa", {}, None),
    "qwen3-qk-norm": ("qwen3", {}, None),
    "internlm2": ("llama", {}, convert.llama_to_internlm2),
    "internlm3": ("llama-bias", {"mlp_bias": False}, convert.llama_to_internlm3),
}


def prompts_for(seed: int, vocab: int = 512):
    rng = np.random.default_rng(seed)
    return [rng.integers(3, vocab, size=n).tolist() for n in (29, 5, 17)]


@pytest.mark.parametrize("case", list(CASES))
def test_family_matches_transformers(case, tiny_ckpt, tmp_path):
    family, overrides, converter = CASES[case]
    ref_dir = tiny_ckpt(family, **overrides)
    model_dir = converter(ref_dir, str(tmp_path / case)) if converter else ref_dir
    hf = hf_model(model_dir, reference_dir=ref_dir)
    llm = LLM(model_dir, device="cpu", dtype="float32", num_kv_blocks=160, block_size=8)
    prompts = prompts_for(zlib.crc32(case.encode()))

    for p in prompts:
        ref = hf_greedy(hf, p, N_TOKENS)
        assert max_rel_err(llm.engine.prompt_logits(p), ref.prompt_logits) < TOL

    # All prompts in one batch: mixed prefill lengths, then batched decode.
    got = halinfer_greedy(llm, prompts, N_TOKENS)
    for p, (tokens, step_logits) in zip(prompts, got):
        ref = hf_greedy(hf, p, N_TOKENS)
        assert len(step_logits) == N_TOKENS
        for i, (mine, theirs) in enumerate(zip(step_logits, ref.step_logits)):
            assert max_rel_err(mine, theirs) < TOL, f"decode step {i}"
        assert tokens == ref.tokens
