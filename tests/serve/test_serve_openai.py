"""The official openai client against `halinfer serve`: outputs equal LLM offline, token for token."""
from __future__ import annotations

import pytest

from halinfer import SamplingParams

from conftest import API_KEY

openai = pytest.importorskip("openai", reason="the openai client is in the dev extra")

PROMPTS = ["Hello, my name is", "The capital of France", "1 2 3 4"]
GREEDY = dict(temperature=0, max_tokens=20, ignore_eos=True)


@pytest.fixture(scope="module")
def oai(server):
    with openai.OpenAI(base_url=server.url + "/v1", api_key=API_KEY, timeout=60, max_retries=0) as c:
        yield c


def _offline(offline, prompts, **kw):
    return offline.generate(prompts, SamplingParams(**{**GREEDY, **kw}), use_tqdm=False)


def test_completion_greedy_equals_offline_token_for_token(oai, offline):
    ref = _offline(offline, PROMPTS)
    r = oai.completions.create(model="tiny", prompt=PROMPTS, temperature=0, max_tokens=20,
                               extra_body={"ignore_eos": True, "return_token_ids": True})
    assert [c.index for c in r.choices] == [0, 1, 2]
    for c, o in zip(r.choices, ref):
        assert c.token_ids == o.outputs[0].token_ids
        assert c.text == o.outputs[0].text
        assert c.finish_reason == "length"
    assert r.usage.completion_tokens == 60
    assert r.usage.prompt_tokens == sum(len(o.prompt_token_ids) for o in ref)


def test_completion_stream_concatenates_to_offline_text(oai, offline):
    ref = _offline(offline, PROMPTS[:1])[0].outputs[0]
    chunks = list(oai.completions.create(model="tiny", prompt=PROMPTS[0], stream=True, temperature=0,
                                         max_tokens=20, stream_options={"include_usage": True},
                                         extra_body={"ignore_eos": True, "return_token_ids": True}))
    body = [c for c in chunks if c.choices]
    assert "".join(c.choices[0].text for c in body) == ref.text
    assert [t for c in body for t in c.choices[0].token_ids] == ref.token_ids
    assert body[-1].choices[0].finish_reason == "length"
    assert all(c.choices[0].finish_reason is None for c in body[:-1])
    assert chunks[-1].usage.completion_tokens == 20 and not chunks[-1].choices


def test_token_id_prompt_equals_text_prompt(oai, offline):
    ids = offline.engine.encode(PROMPTS[1])
    ref = _offline(offline, PROMPTS[1:2])[0].outputs[0]
    r = oai.completions.create(model="tiny", prompt=ids, temperature=0, max_tokens=20,
                               extra_body={"ignore_eos": True, "return_token_ids": True})
    assert r.choices[0].token_ids == ref.token_ids


def test_chat_equals_offline_chat(oai, offline):
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"}]
    ref = offline.chat(msgs, SamplingParams(**GREEDY))[0].outputs[0]
    r = oai.chat.completions.create(model="tiny", messages=msgs, temperature=0, max_completion_tokens=20,
                                    extra_body={"ignore_eos": True, "return_token_ids": True})
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content == ref.text
    assert r.choices[0].token_ids == ref.token_ids
    stream = oai.chat.completions.create(model="tiny", messages=msgs, temperature=0, max_tokens=20, stream=True,
                                         extra_body={"ignore_eos": True})
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == ref.text
    assert chunks[-1].choices[0].finish_reason == "length"


def test_chat_content_parts_are_joined_text(oai):
    parts = [{"type": "text", "text": "Hi"}, {"type": "text", "text": "there"}]
    a = oai.chat.completions.create(model="tiny", messages=[{"role": "user", "content": parts}],
                                    temperature=0, max_tokens=8)
    b = oai.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Hi\nthere"}],
                                    temperature=0, max_tokens=8)
    assert a.choices[0].message.content == b.choices[0].message.content
    assert a.usage.prompt_tokens == b.usage.prompt_tokens


def test_n_and_seed_are_reproducible(oai):
    kw = dict(model="tiny", prompt=PROMPTS[0], n=3, seed=11, temperature=1.0, max_tokens=12)
    a, b = oai.completions.create(**kw), oai.completions.create(**kw)
    assert [c.index for c in a.choices] == [0, 1, 2]
    assert [c.text for c in a.choices] == [c.text for c in b.choices]
    assert len({c.text for c in a.choices}) > 1  # the n completions differ from each other


def test_stop_string_ends_completion_and_is_not_sent(oai, offline):
    full = _offline(offline, PROMPTS[:1])[0].outputs[0].text
    # a two-character stop string of plain letters (random byte-level output holds partial
    # UTF-8 sequences, whose text changes as bytes arrive), first seen after a few characters
    at = next(i for i in range(3, len(full) - 1) if full[i:i + 2].isascii() and full[i:i + 2].isalpha()
              and full.index(full[i:i + 2]) == i)
    stop = full[at:at + 2]
    want = full[:at]
    r = oai.completions.create(model="tiny", prompt=PROMPTS[0], temperature=0, max_tokens=20, stop=[stop])
    assert (r.choices[0].text, r.choices[0].finish_reason) == (want, "stop")
    chunks = list(oai.completions.create(model="tiny", prompt=PROMPTS[0], temperature=0, max_tokens=20,
                                         stop=[stop], stream=True))
    assert "".join(c.choices[0].text for c in chunks) == want


def test_logprobs_shapes(oai):
    r = oai.completions.create(model="tiny", prompt=PROMPTS[0], temperature=0, max_tokens=5, logprobs=3)
    lp = r.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == 5
    assert all(len(t) <= 3 and max(t.values()) >= lp.token_logprobs[i] - 1e-6 for i, t in enumerate(lp.top_logprobs))
    c = oai.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "x"}], temperature=0,
                                    max_tokens=4, logprobs=True, top_logprobs=2)
    content = c.choices[0].logprobs.content
    assert len(content) == 4 and all(len(e.top_logprobs) == 2 for e in content)
    # greedy: the chosen token is the most likely one
    assert all(abs(e.logprob - e.top_logprobs[0].logprob) < 1e-6 for e in content)


def test_models_lists_the_served_name(oai, tiny_model):
    ms = oai.models.list().data
    assert [m.id for m in ms] == ["tiny"]
