"""Sampling through the engine: seeds, n > 1, penalties, logprobs, stops."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from halinfer import SamplingParams

P = [5, 77, 301, 42, 9, 250, 18]


def ids(outs):
    return [c.token_ids for o in outs for c in o.outputs]


def generate_logged(llm, sp):
    """(the completion of P, the logits each of its tokens was drawn from)."""
    from halinfer.testing.logit_log import record_logits

    with record_logits(llm) as log:
        out = llm.generate(prompt_token_ids=[P], sampling_params=sp, use_tqdm=False)[0]
    return out.outputs[0], log[out.request_id]


def test_seeded_sampling_is_independent_of_the_batch(llm):
    sp = SamplingParams(temperature=1.0, top_p=0.9, top_k=50, seed=1234, max_tokens=20, ignore_eos=True)
    alone = ids(llm.generate(prompt_token_ids=[P], sampling_params=sp, use_tqdm=False))[0]
    others = [np.random.default_rng(i).integers(3, 512, size=5 + 7 * i).tolist() for i in range(5)]
    mixed = llm.generate(prompt_token_ids=others[:2] + [P] + others[2:],
                         sampling_params=[SamplingParams(temperature=0.8, max_tokens=9 + i, ignore_eos=True)
                                          for i in range(2)] + [sp] +
                                         [SamplingParams(temperature=0, max_tokens=30, ignore_eos=True)] * 3,
                         use_tqdm=False)
    assert mixed[2].outputs[0].token_ids == alone
    again = ids(llm.generate(prompt_token_ids=[P], sampling_params=sp, use_tqdm=False))[0]
    assert again == alone


def test_different_seeds_and_n_give_different_completions(llm):
    sp = SamplingParams(temperature=1.5, n=3, seed=5, max_tokens=16, ignore_eos=True)
    outs = llm.generate(prompt_token_ids=[P], sampling_params=sp, use_tqdm=False)
    comps = outs[0].outputs
    assert [c.index for c in comps] == [0, 1, 2]
    assert len({tuple(c.token_ids) for c in comps}) == 3
    same = llm.generate(prompt_token_ids=[P], sampling_params=sp, use_tqdm=False)[0].outputs
    assert [c.token_ids for c in same] == [c.token_ids for c in comps]


def test_logprobs_match_log_softmax_of_the_logits(llm):
    sp = SamplingParams(temperature=0, max_tokens=4, logprobs=3, ignore_eos=True)
    out, logged = generate_logged(llm, sp)
    assert len(out.logprobs) == 4
    for tok, lp, logits in zip(out.token_ids, out.logprobs, logged):
        ref = torch.log_softmax(logits, -1)
        top = ref.topk(3)
        assert set(lp) == set(top.indices.tolist()) | {tok}
        for t, v in lp.items():
            assert math.isclose(v, ref[t].item(), abs_tol=1e-5)


def test_repetition_penalty_matches_transformers_processor(llm):
    from transformers import RepetitionPenaltyLogitsProcessor

    sp = SamplingParams(temperature=0, max_tokens=12, repetition_penalty=1.7, ignore_eos=True)
    out, logged = generate_logged(llm, sp)
    proc = RepetitionPenaltyLogitsProcessor(1.7)
    seen = list(P)
    for tok, logits in zip(out.token_ids, logged):
        expect = proc(torch.tensor([seen]), logits[None].clone())[0].argmax().item()
        assert tok == expect
        seen.append(tok)


def test_presence_and_frequency_penalties_follow_openai(llm):
    sp = SamplingParams(temperature=0, max_tokens=10, presence_penalty=1.5, frequency_penalty=0.7, ignore_eos=True)
    out, logged = generate_logged(llm, sp)
    produced: list[int] = []
    for tok, logits in zip(out.token_ids, logged):
        adj = logits.clone()
        for t in set(produced):
            adj[t] -= 1.5 + 0.7 * produced.count(t)
        assert tok == adj.argmax().item()
        produced.append(tok)


def test_stop_token_ids_and_max_tokens(llm):
    base = llm.generate(prompt_token_ids=[P], sampling_params=SamplingParams(temperature=0, max_tokens=20,
                                                                             ignore_eos=True), use_tqdm=False)
    toks = base[0].outputs[0].token_ids
    assert base[0].outputs[0].finish_reason == "length"
    stop_at = toks[6]
    first = toks.index(stop_at)
    out = llm.generate(prompt_token_ids=[P], sampling_params=SamplingParams(
        temperature=0, max_tokens=20, ignore_eos=True, stop_token_ids=[stop_at]), use_tqdm=False)[0].outputs[0]
    assert out.token_ids == toks[:first + 1] and out.finish_reason == "stop" and out.stop_reason == stop_at


def test_stop_strings_cut_the_text(llm):
    base = llm.generate(prompt_token_ids=[P], sampling_params=SamplingParams(temperature=0, max_tokens=20,
                                                                             ignore_eos=True), use_tqdm=False)
    text = base[0].outputs[0].text
    assert len(text) > 8
    stop = text[5:8]
    out = llm.generate(prompt_token_ids=[P], sampling_params=SamplingParams(
        temperature=0, max_tokens=20, ignore_eos=True, stop=[stop]), use_tqdm=False)[0].outputs[0]
    assert out.finish_reason == "stop" and out.stop_reason == stop
    assert out.text == text[:text.find(stop)]


def test_eos_ends_unless_ignored(llm):
    eos = next(iter(llm.engine.eos_ids))
    runner = llm.engine.runner
    sp = SamplingParams(temperature=0, max_tokens=32)
    outs = llm.generate(prompt_token_ids=[[t, t + 1] for t in range(3, 40)], sampling_params=sp, use_tqdm=False)
    ended = [o.outputs[0] for o in outs if o.outputs[0].finish_reason == "stop"]
    assert ended, "no prompt reached EOS; pick other prompts so the case is exercised"
    for c in ended:
        assert c.token_ids[-1] == eos and eos not in c.token_ids[:-1]
    for o in outs:
        c = o.outputs[0]
        if c.finish_reason == "length":
            assert eos not in c.token_ids and len(c.token_ids) == 32
    assert runner is llm.engine.runner


def test_min_tokens_masks_eos(llm):
    eos = next(iter(llm.engine.eos_ids))
    free = SamplingParams(temperature=0, max_tokens=24)
    prompts = [[t, t + 1] for t in range(3, 40)]
    stopped = [o.prompt_token_ids for o in llm.generate(prompt_token_ids=prompts, sampling_params=free,
                                                        use_tqdm=False) if o.outputs[0].finish_reason == "stop"]
    assert stopped
    sp = SamplingParams(temperature=0, max_tokens=24, min_tokens=24)
    for o in llm.generate(prompt_token_ids=stopped, sampling_params=sp, use_tqdm=False):
        assert eos not in o.outputs[0].token_ids and len(o.outputs[0].token_ids) == 24


@pytest.mark.parametrize("kw,field", [
    ({"temperature": -1}, "temperature"), ({"top_p": 0}, "top_p"), ({"top_p": 1.5}, "top_p"),
    ({"top_k": -5}, "top_k"), ({"min_p": 2}, "min_p"), ({"n": 0}, "n"), ({"max_tokens": 0}, "max_tokens"),
    ({"repetition_penalty": 0}, "repetition_penalty"), ({"presence_penalty": 3}, "presence_penalty"),
    ({"frequency_penalty": -3}, "frequency_penalty"), ({"stop": [""]}, "stop"), ({"logprobs": -1}, "logprobs"),
    ({"stop_token_ids": [-1]}, "stop_token_ids"), ({"temperature": float("nan")}, "temperature"),
])
def test_bad_sampling_params_name_the_field(kw, field):
    with pytest.raises(ValueError, match=rf"SamplingParams\.{field}=.*accepted"):
        SamplingParams(**kw)
