"""CUDA decode graphs with the NCCL all-reduce captured inside: TP=2 graphs give TP=1's tokens.

Needs two GPUs; skipped elsewhere.  Written with the code path, not yet run on hardware.
"""
from __future__ import annotations

import pytest
import torch

from halinfer import LLM, SamplingParams
from halinfer.testing.tiny import save_tiny_model

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.device_count() < 2,
                                 reason="needs 2 CUDA GPUs")]


def test_captured_decode_with_nccl_all_reduce_gives_the_tokens_of_one_rank(tmp_path):
    path = save_tiny_model("llama", str(tmp_path / "llama"), seed=5, num_key_value_heads=2)
    kw = dict(device="cuda", dtype="float32", num_kv_blocks=256, max_model_len=256, max_num_seqs=8)
    sp = SamplingParams(temperature=0, max_tokens=24, ignore_eos=True)
    prompts = [[5, 6, 7, 8, 9], [9, 3, 11, 2, 8, 1, 4], [21, 22]]
    one = LLM(path, enforce_eager=True, **kw)
    want = [o.outputs[0].token_ids for o in one.generate(prompt_token_ids=prompts, sampling_params=sp,
                                                         use_tqdm=False)]
    one.shutdown()
    llm = LLM(path, tensor_parallel_size=2, **kw)
    try:
        assert llm.engine.graphs, "decode graphs were not captured with tensor_parallel_size=2"
        got = [o.outputs[0].token_ids for o in llm.generate(prompt_token_ids=prompts, sampling_params=sp,
                                                            use_tqdm=False)]
        assert got == want
    finally:
        llm.shutdown()
