"""Continuous batching, chunked prefill, prefix caching and preemption give the
same greedy tokens as running each prompt alone."""
from __future__ import annotations

import numpy as np

from halinfer import SamplingParams

GREEDY = SamplingParams(temperature=0, max_tokens=24, ignore_eos=True)


def prompts(seed=0, lengths=(3, 40, 11, 1, 27, 8, 16, 33)):
    rng = np.random.default_rng(seed)
    return [rng.integers(3, 512, size=n).tolist() for n in lengths]


def tokens(outs):
    return [o.outputs[0].token_ids for o in outs]


def alone(llm, ps, params=GREEDY):
    return [tokens(llm.generate(prompt_token_ids=[p], sampling_params=params, use_tqdm=False))[0] for p in ps]


def test_eight_prompts_batched_equal_each_alone(llm):
    ps = prompts()
    batched = tokens(llm.generate(prompt_token_ids=ps, sampling_params=GREEDY, use_tqdm=False))
    assert batched == alone(llm, ps)
    assert all(len(t) == 24 for t in batched)


def test_chunked_prefill_under_a_small_token_budget(make_llm, llm):
    ps = prompts(1)
    small = make_llm(max_num_batched_tokens=7)
    assert tokens(small.generate(prompt_token_ids=ps, sampling_params=GREEDY, use_tqdm=False)) == alone(llm, ps)


def test_max_num_seqs_limits_concurrency(make_llm, llm):
    ps = prompts(2)
    two = make_llm(max_num_seqs=2)
    assert tokens(two.generate(prompt_token_ids=ps, sampling_params=GREEDY, use_tqdm=False)) == alone(llm, ps)


def test_prefix_caching_on_and_off_agree_and_hits(make_llm):
    rng = np.random.default_rng(3)
    shared = rng.integers(3, 512, size=21).tolist()
    ps = [shared + rng.integers(3, 512, size=n).tolist() for n in (1, 5, 9, 13)]
    on = make_llm(enable_prefix_caching=True)
    off = make_llm(enable_prefix_caching=False)
    first = tokens(on.generate(prompt_token_ids=ps[:1], sampling_params=GREEDY, use_tqdm=False))
    rest = tokens(on.generate(prompt_token_ids=ps[1:], sampling_params=GREEDY, use_tqdm=False))
    assert on.engine.block_manager.hits >= 3 * 20  # the 21-token prefix's 5 full blocks, reused 3 times
    assert first + rest == tokens(off.generate(prompt_token_ids=ps, sampling_params=GREEDY, use_tqdm=False))
    assert off.engine.block_manager.hits == 0


def test_preemption_when_blocks_run_out_keeps_every_token(make_llm, llm):
    ps = prompts(4)
    # 20 blocks of 4 tokens: fits one long sequence (40 + 24 tokens) but not all 8 at once.
    tight = make_llm(num_kv_blocks=20, max_model_len=80)
    outs = tight.generate(prompt_token_ids=ps, sampling_params=GREEDY, use_tqdm=False)
    assert tight.engine.scheduler.num_preemptions > 0
    assert tokens(outs) == alone(llm, ps)
    assert tight.engine.block_manager.num_free == 20  # everything released
