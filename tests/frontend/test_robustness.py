"""Defects a reliability probe found: each test failed before its fix."""
from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from halinfer import LLM, SamplingParams

from .conftest import ENGINE_KW

G = SamplingParams(temperature=0, max_tokens=6, ignore_eos=True)


def toks(outs):
    return [o.outputs[0].token_ids for o in outs]


def idle(llm):
    eng = llm.engine
    bm = eng.block_manager
    return not eng.has_unfinished() and bm.num_free == bm.num_blocks and not eng.outputs.requests


def still_serves(llm):
    a = llm.generate(prompt_token_ids=[[5, 6, 7]], sampling_params=G, use_tqdm=False)
    assert len(a[0].outputs[0].token_ids) == 6 and a[0].outputs[0].finish_reason == "length"
    assert idle(llm)


@pytest.mark.parametrize("bad, match", [
    (dict(logprobs=10000), "logprobs"),
    (dict(seed=2**63), "seed"),
    (dict(n=True), "n="),
    (dict(n=10**6), "n="),
    (dict(min_tokens=9, max_tokens=3), "min_tokens"),
    (dict(temperature=True), "temperature"),
])
def test_bad_sampling_params_are_refused_at_construction(bad, match):
    with pytest.raises(ValueError, match=match):
        SamplingParams(**bad)


def test_what_only_the_model_knows_is_checked_at_admission(llm):
    V = llm.engine.vocab_size
    with pytest.raises(ValueError, match="stop_token_ids holds"):
        llm.generate(prompt_token_ids=[[5, 6]], sampling_params=SamplingParams(stop_token_ids=[V], min_tokens=2),
                     use_tqdm=False)
    sp = SamplingParams(max_tokens=4)
    sp.logprobs = 10**4   # set after construction: checked at admission all the same
    with pytest.raises(ValueError, match="logprobs"):
        llm.generate(prompt_token_ids=[[5, 6]], sampling_params=sp, use_tqdm=False)
    assert idle(llm)
    still_serves(llm)


@pytest.mark.parametrize("ids, match", [
    ([5, 6.0], "not an int token id"), ([5, "6"], "not an int token id"), ([True, 6], "not an int token id"),
])
def test_token_ids_are_never_coerced(llm, ids, match):
    with pytest.raises(TypeError, match=match):
        llm.generate(prompt_token_ids=[ids], use_tqdm=False)
    assert idle(llm)


def test_array_like_prompts_are_taken_as_token_ids(llm):
    ref = toks(llm.generate(prompt_token_ids=[[5, 6, 7]], sampling_params=G, use_tqdm=False))
    for ids in ([np.int64(5), np.int64(6), np.int64(7)], np.array([5, 6, 7]), torch.tensor([5, 6, 7])):
        assert toks(llm.generate(prompt_token_ids=ids, sampling_params=G, use_tqdm=False)) == ref
    with pytest.raises(TypeError, match="1-D integer"):
        llm.generate(prompt_token_ids=np.array([5.0, 6.0]), use_tqdm=False)


def test_params_lists_and_dicts(llm):
    with pytest.raises(TypeError, match=r"sampling_params\[1\] is None"):
        llm.generate(prompt_token_ids=[[5], [6]], sampling_params=[G, None], use_tqdm=False)
    out = llm.generate(prompt_token_ids=[[5, 6]], sampling_params={"max_tokens": 4, "temperature": 0}, use_tqdm=False)
    assert len(out[0].outputs[0].token_ids) <= 4
    with pytest.raises(ValueError, match="unknown sampling parameter"):
        llm.generate(prompt_token_ids=[[5, 6]], sampling_params={"max_token": 4}, use_tqdm=False)
    free = llm.generate(["the"], sampling_params=SamplingParams(temperature=0, max_tokens=8, ignore_eos=True),
                        use_tqdm=False)[0].outputs[0].text
    assert free, "the case needs some generated text"
    sp = SamplingParams(temperature=0, max_tokens=8, ignore_eos=True)
    # A plain string set after construction is one stop string, not its characters: this one
    # starts with a character the text has, but never occurs whole, so it must not cut the text.
    sp.stop = free[0] + "\x00"
    o = llm.generate(["the"], sampling_params=sp, use_tqdm=False)[0].outputs[0]
    assert o.stop_reason is None and o.text == free


def test_chat_takes_a_plain_string(llm):
    a = llm.chat("hello", SamplingParams(temperature=0, max_tokens=5))
    b = llm.chat([{"role": "user", "content": "hello"}], SamplingParams(temperature=0, max_tokens=5))
    assert toks(a) == toks(b)
    with pytest.raises(TypeError, match="'role' and 'content'"):
        llm.chat([{"text": "hi"}])


def test_stop_token_is_returned_as_vllm_documents(llm):
    free = llm.generate(prompt_token_ids=[[5, 6, 7]], sampling_params=SamplingParams(
        temperature=0, max_tokens=12, ignore_eos=True), use_tqdm=False)[0].outputs[0]
    stop = free.token_ids[4]
    first = free.token_ids.index(stop)
    out = llm.generate(prompt_token_ids=[[5, 6, 7]], sampling_params=SamplingParams(
        temperature=0, max_tokens=12, ignore_eos=True, stop_token_ids=[stop]), use_tqdm=False)[0].outputs[0]
    assert out.finish_reason == "stop" and out.stop_reason == stop
    assert out.token_ids == free.token_ids[:first + 1]          # the stop token is in token_ids
    assert out.text == llm.tokenizer.decode(out.token_ids, skip_special_tokens=True)


def test_a_failing_step_finishes_only_its_requests(llm, monkeypatch):
    runner = llm.engine.runner
    real = runner.launch
    calls = []

    def boom(plan):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("kernel exploded")
        return real(plan)

    monkeypatch.setattr(runner, "launch", boom)
    out = llm.generate(prompt_token_ids=[[5, 6, 7]], sampling_params=G, use_tqdm=False)[0].outputs[0]
    assert out.finish_reason == "error" and "kernel exploded" in out.error
    assert idle(llm)
    still_serves(llm)


def test_a_failed_read_back_does_not_wedge_the_engine(llm, monkeypatch):
    runner = llm.engine.runner
    real = runner.collect
    n = [0]

    def flaky(p):
        n[0] += 1
        if n[0] == 3:
            raise RuntimeError("device lost the tokens")
        return real(p)

    monkeypatch.setattr(runner, "collect", flaky)
    outs = llm.generate(prompt_token_ids=[[5, 6, 7], [8, 9]], sampling_params=SamplingParams(
        temperature=0, max_tokens=10, ignore_eos=True), use_tqdm=False)
    assert {o.outputs[0].finish_reason for o in outs} == {"error"}
    monkeypatch.setattr(runner, "collect", real)
    assert idle(llm)
    still_serves(llm)


def test_an_interrupted_generate_leaves_nothing_behind(llm, monkeypatch):
    eng = llm.engine
    real = eng.step
    n = [0]

    def interrupted():
        n[0] += 1
        if n[0] == 4:
            raise KeyboardInterrupt
        return real()

    monkeypatch.setattr(eng, "step", interrupted)
    with pytest.raises(KeyboardInterrupt):
        llm.generate(prompt_token_ids=[[5, 6, 7]] * 3, sampling_params=SamplingParams(
            temperature=0, max_tokens=500, ignore_eos=True), use_tqdm=False)
    monkeypatch.setattr(eng, "step", real)
    assert idle(llm)
    still_serves(llm)


def test_generate_keeps_to_its_own_requests(llm):
    eng = llm.engine
    rid = eng.add_request(None, SamplingParams(temperature=0, max_tokens=5, ignore_eos=True), [9, 9, 9])
    mine = llm.generate(prompt_token_ids=[[5, 6, 7]], sampling_params=G, use_tqdm=False)
    assert len(mine) == 1
    while not eng.is_finished(rid):
        eng.step()
    other = eng.take(rid)
    ref = llm.generate(prompt_token_ids=[[9, 9, 9]], sampling_params=SamplingParams(
        temperature=0, max_tokens=5, ignore_eos=True), use_tqdm=False)
    assert other.outputs[0].token_ids == ref[0].outputs[0].token_ids
    # an open stream's request survives a generate() in between
    it = llm.stream(prompt_token_ids=[7, 8], sampling_params=SamplingParams(temperature=0, max_tokens=8,
                                                                            ignore_eos=True))
    first = next(it)
    llm.generate(prompt_token_ids=[[5, 6]], sampling_params=G, use_tqdm=False)
    text = first + "".join(it)
    alone = llm.generate(prompt_token_ids=[[7, 8]], sampling_params=SamplingParams(
        temperature=0, max_tokens=8, ignore_eos=True), use_tqdm=False)[0].outputs[0].text
    assert text == alone
    assert idle(llm)


def test_a_failed_stream_raises(llm, monkeypatch):
    runner = llm.engine.runner
    monkeypatch.setattr(runner, "launch", lambda plan: (_ for _ in ()).throw(RuntimeError("no device")))
    with pytest.raises(RuntimeError, match="no device"):
        list(llm.stream(prompt_token_ids=[5, 6], sampling_params=G))
    monkeypatch.undo()
    assert idle(llm)


def test_two_threads_may_share_one_llm(llm):
    ps = [[[5 + i, 6, 7 + j] for j in range(3)] for i in range(2)]
    ref = [toks(llm.generate(prompt_token_ids=p, sampling_params=G, use_tqdm=False)) for p in ps]
    got, errs = [None, None], []

    def run(i):
        try:
            got[i] = toks(llm.generate(prompt_token_ids=ps[i], sampling_params=G, use_tqdm=False))
        except BaseException as e:  # noqa: BLE001
            errs.append(e)

    ts = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(120)
    assert not errs and got == ref
    assert idle(llm)


def test_async_scheduling_registers_decode_blocks_for_prefix_reuse(tiny_dir):
    hits = {}
    for async_ in (True, False):
        llm = LLM(tiny_dir, async_scheduling=async_, **ENGINE_KW)
        p = [5, 6, 7, 8, 9]
        out = llm.generate(prompt_token_ids=[p], sampling_params=SamplingParams(
            temperature=0, max_tokens=30, ignore_eos=True), use_tqdm=False)[0].outputs[0].token_ids
        bm = llm.engine.block_manager
        before = bm.hits
        llm.generate(prompt_token_ids=[p + out], sampling_params=G, use_tqdm=False)
        hits[async_] = bm.hits - before
    assert hits[True] == hits[False] >= (5 + 30 - 1) // 4 * 4 - 4


def test_prefix_hits_are_counted_once_per_admission():
    from halinfer.core.kv_cache import BlockManager
    from halinfer.core.scheduler import Scheduler
    from halinfer.core.sequence import Sequence

    bm = BlockManager(6, 4)
    sched = Scheduler(bm, 4, 64)

    def seq(i, n):
        return Sequence(i, f"r{i}", 0, list(range(1, n + 1)), G, 0, i)

    big = seq(0, 20)
    bm.allocate(big, 20)   # someone else holds 5 of the 6 blocks
    late = seq(1, 9)
    sched.add(late)
    for _ in range(3):
        assert not sched.schedule().seqs   # no room: admission fails each time
    assert late in sched.waiting and bm.queries == 0
    bm.free_seq(big)
    assert sched.schedule().seqs == [late]
    assert bm.queries == 9


def test_final_text_is_the_whole_decode_trailing_replacement_char_included(llm):
    outs = llm.generate(prompt_token_ids=[[5 + i, 6] for i in range(150)],
                        sampling_params=[SamplingParams(temperature=1.0, max_tokens=7, seed=i, ignore_eos=True)
                                         for i in range(150)], use_tqdm=False)
    tok = llm.tokenizer
    assert any(o.outputs[0].text.endswith("\ufffd") for o in outs), "no output ends mid-character; widen the case"
    for o in outs:
        assert o.outputs[0].text == tok.decode(o.outputs[0].token_ids, skip_special_tokens=True)


def test_stop_strings_need_a_tokenizer(tmp_path):
    from halinfer.testing.tiny import save_tiny_model

    d = save_tiny_model("llama", str(tmp_path / "notok"), seed=1, tokenizer=False)
    llm = LLM(d, **ENGINE_KW)
    with pytest.raises(ValueError, match="no tokenizer"):
        llm.generate(prompt_token_ids=[[5, 6]], sampling_params=SamplingParams(stop=["x"]), use_tqdm=False)


def test_a_text_prompt_may_come_with_its_token_ids(llm):
    ids = llm.tokenizer.encode("the cat")
    a = llm.engine.add_request("the cat", G, prompt_token_ids=ids)
    while not llm.engine.is_finished(a):
        llm.engine.step()
    out = llm.engine.take(a)
    assert out.prompt == "the cat" and out.prompt_token_ids == ids
    text = "".join(llm.stream("the cat", G, prompt_token_ids=ids))
    assert text == out.outputs[0].text
    with pytest.raises(ValueError, match="not both"):
        llm.engine.add_request([5, 6], G, prompt_token_ids=[5, 6])
