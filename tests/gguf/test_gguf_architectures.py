"""The GGUF loader on tiny random llama / qwen2 / qwen3 checkpoints written as llama.cpp
writes them, against transformers loading the same GGUF file (float32, greedy tokens)."""
from __future__ import annotations

import os

import pytest

from halinfer import LLM, SamplingParams
from halinfer.core.loader import open_checkpoint
from halinfer.testing.tiny import save_tiny_model

gguf = pytest.importorskip("gguf", reason='needs the demo extra: pip install -e ".[demo]"')
pytest.importorskip("accelerate", reason="transformers' GGUF loading needs accelerate")

PROMPTS = [[5, 17, 99, 3], [250, 1, 2, 3, 4, 5, 6, 7, 8]]


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    from halinfer.testing.gguf_writer import write_gguf

    out = {}
    for arch, quant in (("llama", None), ("llama", "Q8_0"), ("qwen2", None), ("qwen3", None)):
        d = str(tmp_path_factory.mktemp(f"g_{arch}_{quant}"))
        # transformers' GGUF config for qwen3 ignores attention.key_length (halinfer reads it) and
        # keeps Qwen3Config's head_dim of 128: the tiny model uses 128 so the reference loads it.
        extra = {"head_dim": 128} if arch == "qwen3" else {}
        save_tiny_model(arch, os.path.join(d, "hf"), seed=11, tokenizer=False, **extra)
        os.makedirs(os.path.join(d, "gguf"))
        out[(arch, quant)] = write_gguf(os.path.join(d, "hf"), os.path.join(d, "gguf", "m.gguf"), arch, quant)
    return out


@pytest.mark.parametrize("arch,quant", [("llama", None), ("llama", "Q8_0"), ("qwen2", None), ("qwen3", None)])
def test_greedy_equals_transformers_on_the_same_gguf(written, arch, quant):
    from halinfer.testing.hf_gguf import hf_gguf_model, hf_greedy_tokens

    path = written[(arch, quant)]
    llm = LLM(os.path.dirname(path), device="cpu", dtype="float32", max_model_len=128, num_kv_blocks=64,
              block_size=4)  # the directory form: it holds exactly one .gguf
    outs = llm.generate(prompt_token_ids=PROMPTS, sampling_params=SamplingParams(
        temperature=0, max_tokens=12, ignore_eos=True), use_tqdm=False)
    ref = hf_gguf_model(path)
    for p, o in zip(PROMPTS, outs):
        assert o.outputs[0].token_ids == hf_greedy_tokens(ref, p, 12)


def test_without_unpermuting_llama_differs(written, monkeypatch):
    """The Q/K un-permutation matters: skipping it changes the output (the test can fail)."""
    import halinfer.core.gguf as g

    path = written[("llama", None)]
    sp = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True)
    kw = dict(device="cpu", dtype="float32", max_model_len=128, num_kv_blocks=64, block_size=4)
    good = LLM(path, **kw).generate(prompt_token_ids=PROMPTS, sampling_params=sp, use_tqdm=False)
    monkeypatch.setattr(g, "PERMUTED_QK", set())
    bad = LLM(path, **kw).generate(prompt_token_ids=PROMPTS, sampling_params=sp, use_tqdm=False)
    assert [o.outputs[0].token_ids for o in good] != [o.outputs[0].token_ids for o in bad]


def _tiny_gguf(path, arch="llama", qtype=None):
    w = gguf.GGUFWriter(path, arch)
    w.add_block_count(1)
    w.add_embedding_length(32)
    w.add_feed_forward_length(64)
    w.add_head_count(2)
    w.add_vocab_size(16)
    import numpy as np

    if qtype is None:
        w.add_tensor("token_embd.weight", np.zeros((16, 32), dtype=np.float32))
    else:
        w.add_tensor("token_embd.weight", np.zeros((16, 32), dtype=np.uint8), raw_shape=(16, 32), raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_unsupported_architecture_names_file_and_supported(tmp_path):
    p = _tiny_gguf(str(tmp_path / "x.gguf"), arch="mamba")
    with pytest.raises(ValueError, match=r"x\.gguf.*architecture 'mamba' is not supported; supported: .*llama.*qwen2"):
        open_checkpoint(p)


def test_unsupported_tensor_type_names_file_and_supported(tmp_path, monkeypatch):
    import halinfer.core.gguf as g

    p = _tiny_gguf(str(tmp_path / "y.gguf"))
    monkeypatch.setattr(g, "supported_tensor_types", lambda: ["Q8_0"])  # F32 made unsupported
    with pytest.raises(ValueError, match=r"y\.gguf.*tensor type F32 .*token_embd.*supported types: Q8_0"):
        open_checkpoint(p)


def test_directory_with_two_ggufs_asks_which(tmp_path):
    _tiny_gguf(str(tmp_path / "a.gguf"))
    _tiny_gguf(str(tmp_path / "b.gguf"))
    with pytest.raises(ValueError, match=r"2 \.gguf files \(a\.gguf, b\.gguf\)"):
        open_checkpoint(str(tmp_path))
