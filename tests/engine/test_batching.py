"""Continuous batching, chunked prefill, prefix caching and preemption give the
same greedy tokens as running each prompt alone."""
from __future__ import annotations

import numpy as np
import pytest

from halinfer import SamplingParams

GREEDY = SamplingParams(temperature=0, max_tokens=24, ignore_eos=True)


def prompts(seed=0, lengths=(3, 40, 11, 1, 27, 8, 16, 33)):
    rng = np.random.default_rng(seed)
    return [rng.integers(3, 512, size=n).tolist() for n in lengths]


def tokens(outs):
    return [o.outputs[0].token_ids for o in outs]


def alone(llm, ps, params=GREEDY):
    return [tokens(llm.generate(prompt_token_ids=[p], sampling_params=params, use_tqdm=False))[0] for p in ps]


POLICIES = pytest.mark.parametrize("policy", ["separate", "mixed"])


@POLICIES
def test_eight_prompts_batched_equal_each_alone(make_llm, llm, policy):
    ps = prompts()
    batched = tokens(make_llm(scheduling_policy=policy).generate(prompt_token_ids=ps, sampling_params=GREEDY,
                                                                  use_tqdm=False))
    assert batched == alone(llm, ps)
    assert all(len(t) == 24 for t in batched)


@POLICIES
def test_chunked_prefill_under_a_small_token_budget(make_llm, llm, policy):
    ps = prompts(1)
    small = make_llm(max_num_batched_tokens=7, scheduling_policy=policy)
    assert tokens(small.generate(prompt_token_ids=ps, sampling_params=GREEDY, use_tqdm=False)) == alone(llm, ps)


@POLICIES
def test_max_num_seqs_limits_concurrency(make_llm, llm, policy):
    ps = prompts(2)
    two = make_llm(max_num_seqs=2, scheduling_policy=policy)
    assert tokens(two.generate(prompt_token_ids=ps, sampling_params=GREEDY, use_tqdm=False)) == alone(llm, ps)


def test_separate_policy_never_mixes_prefill_and_decode(make_llm):
    sep = make_llm(max_num_seqs=4)
    eng = sep.engine
    for p in prompts(5):
        eng.add_request(None, GREEDY, p)
    kinds = []
    while eng.has_unfinished():
        batch = eng.scheduler.schedule()  # planned: num_computed already counts this step's tokens
        q = batch.num_new
        assert all(n == 1 for n in q) or all(s.num_computed <= s.num_prompt for s in batch.seqs)
        kinds.append("decode" if all(n == 1 for n in q) else "prefill")
        eng.scheduler.update(batch, eng.core.executor.execute(batch.plan))
    assert "decode" in kinds and "prefill" in kinds


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


@POLICIES
def test_preemption_when_blocks_run_out_keeps_every_token(make_llm, llm, policy):
    ps = prompts(4)
    # 20 blocks of 4 tokens: fits one long sequence (40 + 24 tokens) but not all 8 at once.
    tight = make_llm(num_kv_blocks=20, max_model_len=80, scheduling_policy=policy)
    outs = tight.generate(prompt_token_ids=ps, sampling_params=GREEDY, use_tqdm=False)
    assert tight.engine.scheduler.num_preemptions > 0
    assert tokens(outs) == alone(llm, ps)
    assert tight.engine.block_manager.num_free == 20  # everything released


def test_async_scheduling_gives_the_same_tokens(make_llm):
    """Launching decode step N+1 before reading step N's tokens changes nothing visible:
    greedy and seeded outputs, stops by length, EOS, stop ids and max_tokens."""
    ps = prompts(6)
    params = [SamplingParams(temperature=0, max_tokens=5 + 3 * i, ignore_eos=i % 2 == 0) for i in range(4)] + \
             [SamplingParams(temperature=0.9, top_p=0.8, seed=11 + i, max_tokens=20) for i in range(4)]
    on = make_llm(async_scheduling=True, max_model_len=60)
    off = make_llm(async_scheduling=False, max_model_len=60)
    a = on.generate(prompt_token_ids=ps, sampling_params=params, use_tqdm=False)
    b = off.generate(prompt_token_ids=ps, sampling_params=params, use_tqdm=False)
    assert tokens(a) == tokens(b)
    assert [o.outputs[0].finish_reason for o in a] == [o.outputs[0].finish_reason for o in b]
    assert on.engine.block_manager.num_free == on.engine.block_manager.num_blocks


def test_async_steps_really_overlap(make_llm):
    """A decode step is launched while the previous one's tokens are still unread."""
    llm = make_llm(async_scheduling=True)
    eng = llm.engine
    launched_blind = []   # per launch: was an earlier step still unread?
    outstanding = [0]
    real_launch, real_collect = eng.runner.launch, eng.runner.collect

    def spy_launch(plan):
        launched_blind.append(outstanding[0] > 0)
        outstanding[0] += 1
        return real_launch(plan)

    def spy_collect(pending):
        outstanding[0] -= 1
        return real_collect(pending)

    eng.runner.launch, eng.runner.collect = spy_launch, spy_collect
    try:
        llm.generate(prompt_token_ids=prompts(7)[:3], sampling_params=GREEDY, use_tqdm=False)
    finally:
        eng.runner.launch, eng.runner.collect = real_launch, real_collect
    assert sum(launched_blind) > 10
