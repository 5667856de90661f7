"""The user API: text in and out, streaming, chat, pipeline, and every bad input's error."""
from __future__ import annotations

import json
import os
import shutil

import pytest

import halinfer
from halinfer import LLM, SamplingParams
from halinfer.core.device import DeviceError


def test_text_prompts_round_trip_through_the_tokenizer(llm):
    out = llm.generate(["Hello, world!", "The quick brown fox"], SamplingParams(temperature=0, max_tokens=8,
                                                                               ignore_eos=True), use_tqdm=False)
    tok = llm.tokenizer
    for o, p in zip(out, ["Hello, world!", "The quick brown fox"]):
        assert o.prompt == p and o.prompt_token_ids == tok.encode(p)
        c = o.outputs[0]
        assert c.text == tok.decode(c.token_ids, skip_special_tokens=True)


def test_stream_deltas_concatenate_to_the_generated_text(llm):
    sp = SamplingParams(temperature=0, max_tokens=24, ignore_eos=True)
    full = llm.generate("Pack my box", sp, use_tqdm=False)[0].outputs[0].text
    deltas = list(llm.stream("Pack my box", sp))
    assert len(deltas) > 1 and "".join(deltas) == full


def test_chat_applies_the_template(llm):
    msgs = [{"role": "user", "content": "Hello there"}]
    out = llm.chat(msgs, SamplingParams(temperature=0, max_tokens=5, ignore_eos=True))[0]
    expected = llm.tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    assert out.prompt == expected and out.prompt.endswith("<|assistant|>")
    both = llm.chat([msgs, msgs + [{"role": "assistant", "content": "Hi"}, {"role": "user", "content": "Bye"}]],
                    SamplingParams(temperature=0, max_tokens=5, ignore_eos=True))
    assert len(both) == 2 and both[0].outputs[0].token_ids == out.outputs[0].token_ids


def test_pipeline_returns_responses_with_text(llama_dir):
    pipe = halinfer.pipeline(llama_dir, device="cpu", dtype="float32", num_kv_blocks=64)
    rs = pipe(["hi", "hello"], SamplingParams(temperature=0, max_tokens=4, ignore_eos=True))
    assert len(rs) == 2 and all(isinstance(r.text, str) and len(r.outputs[0].token_ids) == 4 for r in rs)
    one = pipe("hi", SamplingParams(temperature=0, max_tokens=4, ignore_eos=True))
    assert one.text == rs[0].text


# -- bad input ----------------------------------------------------------------------
def test_unknown_device_lists_the_known_ones(llama_dir):
    with pytest.raises(DeviceError, match=r"unknown device 'tpu'.*known device names:.*cpu"):
        LLM(llama_dir, device="tpu")


def test_unavailable_device_gives_the_plugins_reason(llama_dir):
    with pytest.raises(DeviceError, match=r"(not available|failed to load)"):
        LLM(llama_dir, device="ascend")


def test_missing_directory_and_files(tmp_path, llama_dir):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        LLM(str(tmp_path / "nope"), device="cpu")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="no config.json"):
        LLM(str(empty), device="cpu")
    noweights = tmp_path / "noweights"
    noweights.mkdir()
    shutil.copy(os.path.join(llama_dir, "config.json"), noweights)
    with pytest.raises(FileNotFoundError, match="no weights"):
        LLM(str(noweights), device="cpu")


def test_unsupported_architecture_lists_the_supported(tmp_path, llama_dir):
    d = tmp_path / "weird"
    shutil.copytree(llama_dir, d)
    cfg = json.loads((d / "config.json").read_text())
    cfg["architectures"] = ["FancyNewForCausalLM"]
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"'FancyNewForCausalLM' is not supported; supported architectures:.*Llama"):
        LLM(str(d), device="cpu")


def test_unsupported_quantization(tmp_path, llama_dir):
    d = tmp_path / "gptq"
    shutil.copytree(llama_dir, d)
    cfg = json.loads((d / "config.json").read_text())
    cfg["quantization_config"] = {"quant_method": "gptq", "bits": 4}
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"'gptq' is not supported"):
        LLM(str(d), device="cpu")
    with pytest.raises(ValueError, match=r"quantization='fp3'.*accepted"):
        LLM(llama_dir, device="cpu", quantization="fp3")


def test_bad_engine_settings(llama_dir):
    with pytest.raises(ValueError, match=r"dtype 'int7'.*accepted"):
        LLM(llama_dir, device="cpu", dtype="int7")
    with pytest.raises(ValueError, match=r"block_size=5 is not supported on cpu; accepted"):
        LLM(llama_dir, device="cpu", block_size=5)
    with pytest.raises(ValueError, match=r"max_model_len=100000 exceeds"):
        LLM(llama_dir, device="cpu", max_model_len=100000)
    with pytest.raises(ValueError, match="gpu_memory_utilization"):
        LLM(llama_dir, device="cpu", gpu_memory_utilization=1.5)
    with pytest.raises(ValueError, match=r"fewer than one sequence of max_model_len=512"):
        LLM(llama_dir, device="cpu", num_kv_blocks=3, block_size=16)
    with pytest.raises(ValueError, match="not divisible by tensor_parallel_size=3"):   # 4 heads
        LLM(llama_dir, device="cpu", tensor_parallel_size=3)


def test_prompt_errors_name_the_prompt_and_leave_others_unharmed(llm):
    ok = [5, 6, 7]
    too_long = [5] * 600
    with pytest.raises(ValueError, match=r"prompt 1: the prompt has 600 tokens; the context.*512"):
        llm.generate(prompt_token_ids=[ok, too_long], sampling_params=SamplingParams(max_tokens=2), use_tqdm=False)
    with pytest.raises(ValueError, match=r"outside the vocabulary"):
        llm.generate(prompt_token_ids=[[5, 99999]], use_tqdm=False)
    with pytest.raises(ValueError, match="empty"):
        llm.generate(prompt_token_ids=[[]], use_tqdm=False)
    assert not llm.engine.has_unfinished()  # nothing half-submitted stays queued
    out = llm.generate(prompt_token_ids=[ok], sampling_params=SamplingParams(temperature=0, max_tokens=3),
                       use_tqdm=False)
    assert len(out[0].outputs[0].token_ids) <= 3


def test_a_failing_request_does_not_stop_the_others(llm, monkeypatch):
    """A request whose post-processing raises is finished with an error; the rest complete."""
    from halinfer.engine import detokenizer

    real = detokenizer.step

    def flaky(tok, seq, skip):
        if seq.prompt_token_ids == [9, 9, 9]:
            raise RuntimeError("boom")
        return real(tok, seq, skip)

    monkeypatch.setattr(detokenizer, "step", flaky)
    sp = SamplingParams(temperature=0, max_tokens=6, ignore_eos=True)
    outs = llm.generate(prompt_token_ids=[[5, 6], [9, 9, 9], [7, 8]], sampling_params=sp, use_tqdm=False)
    assert outs[1].outputs[0].finish_reason == "error" and "boom" in outs[1].outputs[0].error
    assert [len(o.outputs[0].token_ids) for o in (outs[0], outs[2])] == [6, 6]


def test_list_devices_reports_cpu_available():
    devs = {d["name"]: d for d in halinfer.list_devices()}
    assert devs["cpu"]["available"] is True
    for name in ("cuda", "ascend", "camb", "maca"):
        assert name in devs and devs[name]["reason"]


def test_enforce_eager_on_a_graph_only_backend_is_refused(llama_dir, monkeypatch):
    from halinfer.core.plugin import load_plugins

    cpu = load_plugins().backends["cpu"]
    monkeypatch.setattr(type(cpu), "graph_modes", ("graph",))
    with pytest.raises(ValueError, match=r"enforce_eager=True, but the cpu backend runs only in graph mode"):
        LLM(llama_dir, device="cpu", enforce_eager=True, num_kv_blocks=64)
