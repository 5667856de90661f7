"""AsyncLLM: concurrent streams, a request added mid-run, an abort mid-stream."""
from __future__ import annotations

import asyncio

import pytest

from halinfer import AsyncLLM, SamplingParams

from .conftest import ENGINE_KW

SP = SamplingParams(temperature=0, max_tokens=14, ignore_eos=True)
PROMPTS = [[5, 6, 7], [9, 3, 11, 2, 8], [21, 22], [30, 31, 32, 33]]


@pytest.fixture(scope="module")
def async_engine(tiny_dir):
    eng = AsyncLLM(tiny_dir, **ENGINE_KW)
    yield eng
    eng.shutdown()


def alone(llm, ids, sp=SP):
    return llm.generate(prompt_token_ids=[ids], sampling_params=sp, use_tqdm=False)[0].outputs[0]


async def consume(eng, prompt, rid, abort_after=None, seen=None):
    last = None
    async for out in eng.generate(prompt, SP, request_id=rid):
        assert not last or len(out.outputs[0].token_ids) >= len(last.outputs[0].token_ids)  # cumulative
        last = out
        if seen is not None:
            seen.append(rid)
        if abort_after is not None and len(out.outputs[0].token_ids) >= abort_after:
            await eng.abort(rid)
    return last


def test_two_streams_a_late_third_and_an_aborted_fourth(async_engine, llm):
    eng = async_engine
    order = []

    async def main():
        a = asyncio.create_task(consume(eng, PROMPTS[0], "a", seen=order))
        b = asyncio.create_task(consume(eng, {"prompt_token_ids": PROMPTS[1]}, "b", seen=order))
        d = asyncio.create_task(consume(eng, PROMPTS[3], "d", abort_after=3))
        while "a" not in order:   # the third arrives while the first two are streaming
            await asyncio.sleep(0.001)
        c = asyncio.create_task(consume(eng, PROMPTS[2], "c"))
        return await asyncio.wait_for(asyncio.gather(a, b, c, d), 120)

    ra, rb, rc, rd = asyncio.run(main())
    for out, ids in ((ra, PROMPTS[0]), (rb, PROMPTS[1]), (rc, PROMPTS[2])):
        assert out.finished
        ref = alone(llm, ids)
        assert out.outputs[0].token_ids == ref.token_ids
        assert out.outputs[0].text == ref.text
    assert not rd.finished and 3 <= len(rd.outputs[0].token_ids) < SP.max_tokens
    bm = eng.core.block_manager

    async def settle():
        for _ in range(2000):
            if bm.num_free == bm.num_blocks and not eng.core.has_unfinished():
                return True
            await asyncio.sleep(0.005)
        return False

    assert asyncio.run(settle()), f"{bm.num_blocks - bm.num_free} blocks still held"


def test_bad_input_is_refused_before_anything_runs(async_engine):
    async def main():
        with pytest.raises(ValueError, match="outside the vocabulary|temperature"):
            async for _ in async_engine.generate([5, 6], SamplingParams(temperature=-1)):
                pass
        with pytest.raises(TypeError, match="not an int token id"):
            async for _ in async_engine.generate([5, 6.0]):
                pass
        outs = [o async for o in async_engine.generate([5, 6], SamplingParams(temperature=0, max_tokens=3))]
        assert outs[-1].finished and len(outs[-1].outputs[0].token_ids) == 3

    asyncio.run(main())


def test_a_cancelled_consumer_aborts_its_request(async_engine):
    eng = async_engine
    sp = SamplingParams(temperature=0, max_tokens=200, ignore_eos=True)

    async def main():
        async def reader():
            async for _ in eng.generate([7, 8, 9], sp, request_id="gone"):
                pass

        t = asyncio.create_task(reader())
        while eng.core.num_running == 0:
            await asyncio.sleep(0.001)
        t.cancel()
        with pytest.raises(asyncio.CancelledError):
            await t
        for _ in range(2000):
            if not eng.core.has_unfinished():
                break
            await asyncio.sleep(0.005)
        return eng.core.has_unfinished()

    assert asyncio.run(main()) is False
    bm = eng.core.block_manager
    assert bm.num_free == bm.num_blocks
