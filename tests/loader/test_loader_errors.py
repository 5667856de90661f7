"""Damaged or inconsistent checkpoints give clear errors naming the file, field or tensor."""
from __future__ import annotations

import json
import os
import shutil

import pytest

from halinfer import LLM
from halinfer.cli import main as cli_main
from halinfer.testing.tiny import save_tiny_model


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return save_tiny_model("llama", str(tmp_path_factory.mktemp("loader_tiny")), seed=3)


@pytest.fixture
def copy(tiny_dir, tmp_path):
    dst = str(tmp_path / "m")
    shutil.copytree(tiny_dir, dst)
    return dst


def _edit_config(d, **fields):
    p = os.path.join(d, "config.json")
    cfg = json.load(open(p))
    for k, v in fields.items():
        if v is None:
            cfg.pop(k, None)
        else:
            cfg[k] = v
    json.dump(cfg, open(p, "w"))


def load(d):
    return LLM(d, device="cpu", dtype="float32", num_kv_blocks=64, block_size=4, max_model_len=128)


def test_corrupt_config_json_names_the_file(copy):
    open(os.path.join(copy, "config.json"), "w").write("{ not json")
    with pytest.raises(ValueError, match=r"config\.json.*not valid JSON"):
        load(copy)


def test_truncated_safetensors_is_a_clear_cli_error(copy, capsys):
    st = os.path.join(copy, "model.safetensors")
    data = open(st, "rb").read()
    open(st, "wb").write(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"model\.safetensors.*could not be read"):
        load(copy)
    assert cli_main(["generate", copy, "hi", "--device", "cpu", "--max-tokens", "2"]) == 2
    err = capsys.readouterr().err
    assert "model.safetensors" in err and "Traceback" not in err


def test_missing_kv_heads_names_the_tensor_and_shapes(copy):
    cfg = json.load(open(os.path.join(copy, "config.json")))
    assert cfg["num_key_value_heads"] != cfg["num_attention_heads"]
    _edit_config(copy, num_key_value_heads=None)
    with pytest.raises(ValueError, match=r"k_proj\.weight.*has shape \(\d+, \d+\), the model expects \(\d+, \d+\)"):
        load(copy)


def test_wrong_shaped_q_proj_names_the_tensor(copy):
    from safetensors.torch import load_file, save_file

    st = os.path.join(copy, "model.safetensors")
    t = load_file(st)
    name = "model.layers.0.self_attn.q_proj.weight"
    t[name] = t[name][0].clone()  # [N] would broadcast into [N, K] without the check
    save_file(t, st)
    with pytest.raises(ValueError, match=r"layers\.0\.self_attn\.q_proj\.weight.*has shape"):
        load(copy)


def test_invalid_tokenizer_json_names_the_file(copy):
    for n in os.listdir(copy):
        if n.startswith("tokenizer") and n != "tokenizer.json":
            os.remove(os.path.join(copy, n))
    open(os.path.join(copy, "tokenizer.json"), "w").write("{ broken")
    with pytest.raises(ValueError, match=r"tokenizer\.json"):
        load(copy)


def test_string_hidden_size_names_the_field(copy):
    _edit_config(copy, hidden_size="64")
    with pytest.raises(ValueError, match=r"'hidden_size' must be a positive integer, got '64'"):
        load(copy)


def test_nan_weights_warn_naming_the_tensor(copy):
    from safetensors.torch import load_file, save_file

    st = os.path.join(copy, "model.safetensors")
    t = load_file(st)
    t["model.layers.1.mlp.down_proj.weight"][0, 0] = float("nan")
    save_file(t, st)
    with pytest.warns(UserWarning, match=r"NaN.*layers\.1\.mlp\.down_proj\.weight"):
        load(copy)


def test_unknown_tensor_is_skipped_with_a_warning(copy):
    import torch
    from safetensors.torch import load_file, save_file

    st = os.path.join(copy, "model.safetensors")
    t = load_file(st)
    t["model.layers.0.extra_adapter.weight"] = torch.zeros(3)
    save_file(t, st)
    with pytest.warns(UserWarning, match=r"skipped: model\.layers\.0\.extra_adapter\.weight"):
        llm = load(copy)
    assert llm.generate(prompt_token_ids=[1, 2, 3], use_tqdm=False)[0].outputs[0].token_ids
