"""On a GPU: the MoE and MLA families through the engine (Triton fused MoE and
attention kernels, CUDA graphs for decode) against transformers in float32."""
from __future__ import annotations

import zlib

import pytest

from conftest import GPU_OK, GPU_WHY

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not GPU_OK, reason=GPU_WHY)]

TOL = 1e-3   # float32 end to end, as test_cuda_engine_gpu.py
CASES = ["mixtral", "qwen2-moe", "qwen3-moe", "deepseek-moe", "deepseek-v2", "minicpm3", "phi3.5-moe",
         "glm4.5-moe", "gpt-oss", "llama4-text"]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("eager", [False, True], ids=["graphs", "eager"])
def test_moe_family_on_cuda_matches_transformers(case, eager, tmp_path):
    from halinfer import LLM
    from halinfer.testing.cases import build_case
    from halinfer.testing.hf_compare import halinfer_greedy, hf_greedy, hf_model, max_rel_err, random_prompts

    model_dir, ref_dir = build_case(case, str(tmp_path))
    hf = hf_model(model_dir, reference_dir=ref_dir)
    llm = LLM(model_dir, device="cuda", dtype="float32", num_kv_blocks=160, block_size=16, max_num_seqs=8,
              enforce_eager=eager)
    assert llm.engine.graphs is (not eager)
    prompts = random_prompts(zlib.crc32(case.encode()), llm.engine.vocab_size)
    for p, (tokens, step_logits) in zip(prompts, halinfer_greedy(llm, prompts, 24)):
        ref = hf_greedy(hf, p, 24)
        for i, (mine, theirs) in enumerate(zip(step_logits, ref.step_logits)):
            assert max_rel_err(mine, theirs) < TOL, f"decode step {i}"
        assert tokens == ref.tokens
