"""On a GPU: every vision-language family through the engine (vision ops' references on
CUDA tensors, Triton attention for the text model, CUDA graphs for decode) against
transformers: float32 logits and greedy tokens, and bf16 within transformers' own noise."""
from __future__ import annotations

import pytest

from conftest import GPU_OK, GPU_WHY

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not GPU_OK, reason=GPU_WHY)]

FAMILIES = ["llava", "llava-next", "qwen2-vl", "qwen2.5-vl", "internvl", "gemma3", "qwen3-vl", "qwen3-vl-moe"]


@pytest.mark.parametrize("fam", FAMILIES)
@pytest.mark.parametrize("eager", [False, True], ids=["graphs", "eager"])
def test_vlm_on_cuda_matches_transformers_float32(fam, eager, tmp_path):
    from halinfer import LLM
    from halinfer.testing.hf_vlm import assert_vlm_matches, hf_vlm
    from halinfer.testing.tiny_vlm import SAVERS
    from halinfer.testing.vlm_cases import vlm_prompts

    path = SAVERS[fam](str(tmp_path / "m"), seed=3)
    llm = LLM(path, device="cuda", dtype="float32", num_kv_blocks=160, block_size=16, max_num_seqs=8,
              enforce_eager=eager)
    assert llm.engine.graphs is (not eager)
    assert_vlm_matches(llm, path, hf_vlm(path), vlm_prompts("vlm:" + fam), tol=1e-3)


@pytest.mark.parametrize("fam", FAMILIES)
def test_vlm_on_cuda_bf16_within_transformers_noise(fam, tmp_path):
    import torch

    from halinfer import LLM
    from halinfer.testing.hf_vlm import assert_vlm_close, hf_vlm
    from halinfer.testing.tiny_vlm import SAVERS
    from halinfer.testing.vlm_cases import vlm_prompts

    path = SAVERS[fam](str(tmp_path / "m"), seed=3)
    llm = LLM(path, device="cuda", dtype="bfloat16", num_kv_blocks=160, block_size=16, max_num_seqs=8)
    hf_exact, hf_lowp = hf_vlm(path).to(torch.bfloat16).float(), hf_vlm(path).to(torch.bfloat16)
    assert_vlm_close(llm, path, hf_exact, hf_lowp, vlm_prompts("vlm:" + fam))


@pytest.mark.parametrize("budget", [16, 21, 40])
def test_gemma3_chunked_prefill_on_cuda_keeps_images_whole(budget, tmp_path):
    """Gemma 3's bidirectional image spans through the Triton prefill kernel, with chunk
    budgets that would otherwise cut images (the scheduler keeps each image in one chunk)."""
    from halinfer import LLM
    from halinfer.testing.hf_vlm import assert_vlm_matches, hf_vlm
    from halinfer.testing.tiny_vlm import SAVERS
    from halinfer.testing.vlm_cases import vlm_prompts

    path = SAVERS["gemma3"](str(tmp_path / "m"), seed=3)
    llm = LLM(path, device="cuda", dtype="float32", num_kv_blocks=160, block_size=16, max_num_seqs=8,
              max_num_batched_tokens=budget)
    assert_vlm_matches(llm, path, hf_vlm(path), vlm_prompts("vlm:gemma3"), tol=1e-3)
