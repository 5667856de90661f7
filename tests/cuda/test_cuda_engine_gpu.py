"""On a GPU: whole tiny models through the engine (Triton kernels, CUDA graphs for
decode) against transformers in float32, as tests/models does for the CPU."""
from __future__ import annotations

import zlib

import numpy as np
import pytest

from conftest import GPU_OK, GPU_WHY

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not GPU_OK, reason=GPU_WHY)]

TOL = 1e-3   # float32 end to end; the attention dots run in IEEE float32, GEMMs without TF32


@pytest.mark.parametrize("family", ["llama", "mistral", "qwen2-swa", "qwen3"])
@pytest.mark.parametrize("eager", [False, True], ids=["graphs", "eager"])
def test_tiny_model_on_cuda_matches_transformers(family, eager, tmp_path):
    from halinfer import LLM
    from halinfer.testing.hf_compare import halinfer_greedy, hf_greedy, hf_model, max_rel_err
    from halinfer.testing.tiny import save_tiny_model

    path = save_tiny_model(family, str(tmp_path / family), seed=1)
    hf = hf_model(path)
    llm = LLM(path, device="cuda", dtype="float32", num_kv_blocks=160, block_size=16, max_num_seqs=8,
              enforce_eager=eager)
    assert llm.engine.graphs is (not eager)
    rng = np.random.default_rng(zlib.crc32(family.encode()))
    prompts = [rng.integers(3, 512, size=n).tolist() for n in (29, 5, 17)]
    for p, (tokens, step_logits) in zip(prompts, halinfer_greedy(llm, prompts, 24)):
        ref = hf_greedy(hf, p, 24)
        for i, (mine, theirs) in enumerate(zip(step_logits, ref.step_logits)):
            assert max_rel_err(mine, theirs) < TOL, f"decode step {i}"
        assert tokens == ref.tokens
