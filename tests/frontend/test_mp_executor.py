"""The multi-process executor (one worker process) gives the in-process executor's tokens."""
from __future__ import annotations

import pytest

from halinfer import LLM, SamplingParams

from .conftest import ENGINE_KW


@pytest.fixture(scope="module")
def mp_llm(tiny_dir):
    llm = LLM(tiny_dir, executor="mp", **ENGINE_KW)
    yield llm
    llm.shutdown()


def test_one_worker_process_equals_in_process(mp_llm, llm):
    prompts = [[5, 6, 7], [9, 3, 11, 2, 8, 1, 4], [21, 22], list(range(3, 40))]
    for sp in (SamplingParams(temperature=0, max_tokens=20, ignore_eos=True),
               SamplingParams(temperature=0.8, top_p=0.9, seed=3, max_tokens=12, ignore_eos=True, logprobs=2),
               SamplingParams(temperature=0, max_tokens=9, repetition_penalty=1.3, ignore_eos=True)):
        a = mp_llm.generate(prompt_token_ids=prompts, sampling_params=sp, use_tqdm=False)
        b = llm.generate(prompt_token_ids=prompts, sampling_params=sp, use_tqdm=False)
        assert [o.outputs[0].token_ids for o in a] == [o.outputs[0].token_ids for o in b]
        if sp.logprobs:
            for x, y in zip(a, b):
                for da, db in zip(x.outputs[0].logprobs, y.outputs[0].logprobs):
                    assert da.keys() == db.keys()
                    assert all(abs(da[k] - db[k]) < 1e-5 for k in da)


def test_prompt_logits_through_the_worker_process(mp_llm, llm):
    ids = [5, 6, 7, 8, 9, 10, 11]
    a, b = mp_llm.engine.prompt_logits(ids), llm.engine.prompt_logits(ids)
    assert a.shape == b.shape == (len(ids), llm.engine.vocab_size)
    # float32 on the CPU, and the two processes' thread pools differ (tests/models/conftest.py sets
    # this one to 1 thread; the spawned worker keeps torch's default), so the GEMMs split their sums
    # differently: 1.5e-5 on logits up to 12 here.  Bounded relative to the logits' scale (1e-5 of
    # it); a corrupted transfer is off by far more.
    scale = float(b.abs().max())
    assert (a - b).abs().max().item() <= 1e-5 * max(1.0, scale)


def test_a_worker_that_dies_fails_requests_with_an_error(tiny_dir):
    llm = LLM(tiny_dir, executor="mp", **ENGINE_KW)
    try:
        llm.engine.core.executor.procs[0].kill()
        llm.engine.core.executor.procs[0].join(10)
        out = llm.generate(prompt_token_ids=[[5, 6]], sampling_params=SamplingParams(max_tokens=4), use_tqdm=False)
        assert out[0].outputs[0].finish_reason == "error" and "worker" in out[0].outputs[0].error
    finally:
        llm.shutdown()
