"""tensor_parallel_size=N on the CPU (gloo) gives the tokens of one rank, on the same checkpoint.

Each case starts N worker processes once and compares greedy tokens (and prompt
logits) with an in-process TP=1 engine: float32 keeps the sharded sums within
rounding of the whole ones.  Cases: GQA with KV heads split (TP=2) and replicated
(TP=4, a vocabulary that does not divide by 4), MoE with the experts split (EP) and
each expert sharded (TP), and MLA with its latent cache replicated.
"""
from __future__ import annotations

import pytest

from halinfer import LLM, SamplingParams
from halinfer.testing.tiny import save_tiny_model

KW = dict(device="cpu", dtype="float32", block_size=4, num_kv_blocks=96, max_num_seqs=4, max_model_len=128)
PROMPTS = [[5, 6, 7, 8, 9], [9, 3, 11, 2, 8, 1, 4, 20, 30, 31, 40], [21, 22]]
GREEDY = SamplingParams(temperature=0, max_tokens=10, ignore_eos=True)

CASES = {
    # id: (family, overrides, tensor_parallel_size, enable_expert_parallel)
    "llama-gqa-tp2": ("llama", {}, 2, False),                          # 4 heads, 2 KV heads: 1 each
    "llama-kv-replicated-tp4": ("llama", {"vocab_size": 510}, 4, False),  # 2 KV heads on 4 ranks
    "qwen2-moe-ep2": ("qwen2-moe", {}, 2, True),                       # 4 of 8 experts per rank
    "qwen2-moe-tp2": ("qwen2-moe", {}, 2, False),                      # every expert half-width
    "deepseek-v2-mla-tp2": ("deepseek-v2", {}, 2, False),              # MLA + grouped MoE + shared experts
}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    built = {}

    def get(family, overrides):
        key = (family, tuple(sorted(overrides.items())))
        if key not in built:
            built[key] = save_tiny_model(family, str(tmp_path_factory.mktemp(family)), seed=5, **overrides)
        return built[key]

    return get


def tokens(llm, params=GREEDY):
    return [o.outputs[0].token_ids for o in llm.generate(prompt_token_ids=PROMPTS, sampling_params=params,
                                                         use_tqdm=False)]


@pytest.mark.parametrize("case", list(CASES))
def test_tensor_parallel_gives_the_tokens_of_one_rank(case, checkpoint):
    family, over, n, ep = CASES[case]
    path = checkpoint(family, over)
    one = LLM(path, **KW)
    want, want_logits = tokens(one), one.engine.prompt_logits(PROMPTS[1])
    llm = LLM(path, tensor_parallel_size=n, enable_expert_parallel=ep, **KW)
    try:
        assert llm.engine.core.executor.world_size == n
        assert tokens(llm) == want
        got_logits = llm.engine.prompt_logits(PROMPTS[1])
        assert got_logits.shape == want_logits.shape
        assert (got_logits - want_logits).abs().max().item() < 1e-4
        if case == "llama-gqa-tp2":  # seeded sampling draws identically on every rank
            sp = SamplingParams(temperature=0.9, top_p=0.9, seed=7, max_tokens=8, ignore_eos=True)
            assert tokens(llm, sp) == tokens(one, sp)
    finally:
        llm.shutdown()


def test_a_rank_that_dies_fails_requests_with_a_clear_error(checkpoint):
    llm = LLM(checkpoint("llama", {}), tensor_parallel_size=2, **KW)
    try:
        ex = llm.engine.core.executor
        ex.procs[1].kill()
        ex.procs[1].join(10)
        out = llm.generate(prompt_token_ids=[[5, 6]], sampling_params=SamplingParams(max_tokens=4), use_tqdm=False)
        err = out[0].outputs[0]
        assert err.finish_reason == "error" and "worker process 1" in err.error, err.error
    finally:
        llm.shutdown()
